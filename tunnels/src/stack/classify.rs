//! What the stack looks at in a packet before smoltcp does: whether it opens a TCP connection.

use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

/// A TCP segment that opens a connection (SYN without ACK): who opens it and to which port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Syn {
    /// The address and port the connection comes from.
    pub(crate) from: SocketAddr,
    /// The address it is for.
    pub(crate) to: IpAddr,
    /// The port it is for.
    pub(crate) port: u16,
}

/// The connection `packet` opens, if it is a well-formed IPv4 or IPv6 TCP SYN. Checksums are
/// smoltcp's to check; anything else (other protocols, fragments, extension headers, garbage)
/// is `None`, and goes to smoltcp as it is.
pub(crate) fn syn(packet: &[u8]) -> Option<Syn> {
    let (from, to, payload) = match packet.first()? >> 4 {
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            (IpAddr::V6(src), IpAddr::V6(dst), ip.payload())
        }
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            (IpAddr::V4(src), IpAddr::V4(dst), ip.payload())
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    if !tcp.syn() || tcp.ack() || tcp.rst() || tcp.fin() {
        return None;
    }
    Some(Syn {
        from: SocketAddr::new(from, tcp.src_port()),
        to,
        port: tcp.dst_port(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, Ipv6Repr, TcpControl, TcpRepr, TcpSeqNumber};

    fn segment(control: TcpControl, ack: Option<u32>) -> Vec<u8> {
        let (src, dst) = ("fd00::b".parse().unwrap(), "fd00::a".parse().unwrap());
        let tcp = TcpRepr {
            src_port: 40_000,
            dst_port: 8000,
            control,
            seq_number: TcpSeqNumber(1),
            ack_number: ack.map(|n| TcpSeqNumber(n as i32)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0; ip.buffer_len() + tcp.buffer_len()];
        let mut packet = Ipv6Packet::new_unchecked(&mut buf);
        ip.emit(&mut packet);
        tcp.emit(
            &mut TcpPacket::new_unchecked(packet.payload_mut()),
            &IpAddress::Ipv6(src),
            &IpAddress::Ipv6(dst),
            &ChecksumCapabilities::default(),
        );
        buf
    }

    #[test]
    fn a_syn_is_told_from_the_rest_of_a_connection() {
        let syn_packet = segment(TcpControl::Syn, None);
        assert_eq!(
            syn(&syn_packet),
            Some(Syn {
                from: "[fd00::b]:40000".parse().unwrap(),
                to: "fd00::a".parse().unwrap(),
                port: 8000,
            })
        );
        // A SYN-ACK, a plain ACK, a RST and a FIN open nothing.
        assert_eq!(syn(&segment(TcpControl::Syn, Some(5))), None);
        assert_eq!(syn(&segment(TcpControl::None, Some(5))), None);
        assert_eq!(syn(&segment(TcpControl::Rst, None)), None);
        assert_eq!(syn(&segment(TcpControl::Fin, Some(5))), None);
        // Cut short, or not IP at all: nothing, and no panic.
        for len in 0..syn_packet.len() {
            assert_eq!(syn(&syn_packet[..len]), None, "{len} bytes");
        }
        assert_eq!(syn(b"\x00garbage"), None);
    }
}
