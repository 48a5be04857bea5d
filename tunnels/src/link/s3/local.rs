//! An S3-compatible server in this process: `s3s-fs` on a directory, served on loopback.
//!
//! For the demo, which needs no AWS account, and for tests, which talk to it through the real
//! AWS SDK. Stopping it (or dropping it) closes the listener and every connection, so a test can
//! also take the server away in the middle of a transfer and bring it back on the same port.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::{
    CreateBucketInput, CreateBucketOutput, DeleteObjectsInput, DeleteObjectsOutput, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, ListObjectsV2Input, ListObjectsV2Output,
    PutObjectInput, PutObjectOutput,
};
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::S3StoreConfig;

/// The access key the local server accepts.
pub const ACCESS_KEY: &str = "local-access-key";
/// The secret key the local server accepts.
pub const SECRET_KEY: &str = "local-secret-key";

/// How the local server answers where S3's answers depend on more than the request: the
/// caller's permissions, the load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answers {
    /// Answer a GET of a missing key with 403 AccessDenied, not 404 NoSuchKey, as S3 does for a
    /// caller that may not `s3:ListBucket` the bucket.
    pub missing_key_forbidden: bool,
    /// Answer every this-many-th request (0: none) with 503 SlowDown, as S3 does when a prefix
    /// gets more requests than it takes.
    pub slow_down_every: u32,
}

/// s3s-fs with the operations the store uses, answering as S3 would.
struct AsAws {
    fs: s3s_fs::FileSystem,
    /// The directory `fs` serves.
    root: PathBuf,
    answers: Answers,
    requests: AtomicU32,
}

impl AsAws {
    /// SlowDown for every `slow_down_every`-th request.
    fn admit(&self) -> S3Result<()> {
        let every = self.answers.slow_down_every;
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if every > 0 && n.is_multiple_of(every) {
            return Err(s3_error!(SlowDown, "Please reduce your request rate."));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl S3 for AsAws {
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.admit()?;
        // Only a whole object, and only a key that stays under the root (`Path::join` of an
        // absolute path would replace it).
        let key = &req.input.key;
        let under_root = !key.starts_with('/') && !key.split('/').any(|part| part == "..");
        let whole = (req.input.range.is_none() && under_root)
            .then(|| self.root.join(&req.input.bucket).join(key));
        match self.fs.get_object(req).await {
            Err(err)
                if self.answers.missing_key_forbidden && *err.code() == S3ErrorCode::NoSuchKey =>
            {
                Err(s3_error!(AccessDenied, "Access Denied"))
            }
            Ok(mut answer) => {
                // s3s-fs streams a body in reads of 4 KiB, each a trip to Tokio's blocking
                // pool: 11 ms for a GET of 1.3 MB on loopback. One read of the whole object
                // takes a fifth of that. (The key was resolved under the root by s3s-fs.)
                if let Some(path) = whole
                    && let Ok(bytes) = tokio::fs::read(&path).await
                    && answer.output.content_length == i64::try_from(bytes.len()).ok()
                {
                    answer.output.body = Some(s3s::dto::StreamingBlob::from(s3s::Body::from(
                        bytes::Bytes::from(bytes),
                    )));
                }
                Ok(answer)
            }
            answer => answer,
        }
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.admit()?;
        self.fs.put_object(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.admit()?;
        self.fs.list_objects_v2(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.admit()?;
        self.fs.delete_objects(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }
}

/// A running local S3 server. Dropping it stops it.
#[derive(Debug)]
pub struct LocalS3 {
    addr: SocketAddr,
    root: PathBuf,
    tasks: JoinSet<()>,
}

impl LocalS3 {
    /// Serves the buckets under `root` (a bucket is a directory) on `addr` (port 0 picks one).
    ///
    /// # Errors
    ///
    /// If `root` is not a usable directory or the address cannot be bound.
    pub async fn start(root: &Path, addr: SocketAddr) -> io::Result<LocalS3> {
        Self::start_with(root, addr, Answers::default()).await
    }

    /// As [`start`](LocalS3::start), answering as `answers` says.
    ///
    /// # Errors
    ///
    /// If `root` is not a usable directory or the address cannot be bound.
    pub async fn start_with(
        root: &Path,
        addr: SocketAddr,
        answers: Answers,
    ) -> io::Result<LocalS3> {
        std::fs::create_dir_all(root)?;
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(AsAws {
            fs,
            root: root.to_owned(),
            answers,
            requests: AtomicU32::new(0),
        });
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Connections live in a set owned by the accept loop, so aborting the loop (when
            // the server stops) drops them too.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                // Without it, the tail of a response waits for the client's delayed ACK
                // (Nagle's algorithm): 40 ms on a GET of a megabyte, every round trip of a
                // bulk transfer through the tunnel.
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                connections.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(LocalS3 {
            addr,
            root: root.to_owned(),
            tasks,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its endpoint URL, such as `http://127.0.0.1:41234`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory it serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a bucket (a directory).
    ///
    /// # Errors
    ///
    /// If the directory cannot be created.
    pub fn create_bucket(&self, bucket: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.root.join(bucket))
    }

    /// A store configuration for `bucket` on this server, with its credentials.
    pub fn store_config(&self, bucket: &str) -> S3StoreConfig {
        S3StoreConfig {
            bucket: bucket.to_owned(),
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.endpoint_url()),
            path_style: true,
            credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
            ..S3StoreConfig::default()
        }
    }

    /// Stops serving: the listener closes and open connections are dropped.
    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}
