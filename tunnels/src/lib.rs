//! Wire format and links for tunnels over pay-per-call APIs. Filled in by the cost-engine issue.
