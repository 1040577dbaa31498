//! Length-delimited protobuf framing for request-response protocols.
//!
//! Each message is an unsigned LEB128 varint length followed by that many bytes
//! of protobuf. The length is checked against the protocol's limit before a byte
//! of the body is read, so an oversized or lying prefix costs the reader nothing.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use prost::Message;

/// Why a frame was refused. Carried inside `io::Error` (kind `InvalidData`)
/// because that is what libp2p's codec trait returns.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is longer than 10 bytes or overflows 64 bits.
    #[error("malformed length prefix")]
    BadPrefix,
    /// The announced length is larger than this protocol accepts.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Limit for this direction of this protocol.
        limit: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The body is not a valid protobuf message of the expected type.
    #[error("invalid protobuf: {0}")]
    Decode(String),
    /// The node is already receiving as many bytes as it holds at once.
    #[error("the node is receiving too much at once; try again")]
    Busy,
}

/// How many bytes of request bodies a node holds at once, across every
/// stream and peer. A body's announced length is reserved before it is read
/// and given back once it is decoded, so a crowd of peers announcing large
/// frames and trickling them costs at most this much memory.
#[derive(Debug)]
pub struct InboundBudget {
    left: std::sync::atomic::AtomicUsize,
}

impl InboundBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(InboundBudget { left: std::sync::atomic::AtomicUsize::new(bytes) })
    }

    /// Reserves `n` bytes, or `None` if fewer are left.
    pub fn reserve(self: &std::sync::Arc<Self>, n: usize) -> Option<Reservation> {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(n))
            .ok()
            .map(|_| Reservation { budget: self.clone(), n })
    }

    /// Bytes not reserved now.
    pub fn left(&self) -> usize {
        self.left.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Bytes held from an [`InboundBudget`] until dropped.
pub struct Reservation {
    budget: std::sync::Arc<InboundBudget>,
    n: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.left.fetch_add(self.n, std::sync::atomic::Ordering::AcqRel);
    }
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Decodes one frame from a complete buffer. Used by the fuzz target and tests;
/// the streaming reader below applies the same rules.
pub fn decode_frame<M: Message + Default>(buf: &[u8], limit: usize) -> Result<(M, usize), FrameError> {
    let mut len: u64 = 0;
    let mut i = 0;
    loop {
        let byte = *buf.get(i).ok_or(FrameError::Truncated)?;
        if i == 9 && byte > 1 {
            return Err(FrameError::BadPrefix);
        }
        len |= u64::from(byte & 0x7f) << (7 * i);
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if i == 10 {
            return Err(FrameError::BadPrefix);
        }
    }
    if len > limit as u64 {
        return Err(FrameError::TooLarge { len, limit });
    }
    let end = i + len as usize;
    let body = buf.get(i..end).ok_or(FrameError::Truncated)?;
    let msg = M::decode(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    Ok((msg, end))
}

/// Encodes a message as one frame.
pub fn encode_frame<M: Message>(msg: &M) -> Vec<u8> {
    msg.encode_length_delimited_to_vec()
}

async fn read_varint<T: AsyncRead + Unpin>(io: &mut T) -> Result<u64, FrameError> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await.map_err(|_| FrameError::Truncated)?;
        let byte = byte[0];
        if i == 9 && byte > 1 {
            return Err(FrameError::BadPrefix);
        }
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(len);
        }
    }
    Err(FrameError::BadPrefix)
}

/// Reads one frame from a stream, refusing it before reading the body if it is
/// longer than `limit`.
pub async fn read_frame<M, T>(io: &mut T, limit: usize) -> io::Result<M>
where
    M: Message + Default,
    T: AsyncRead + Unpin,
{
    let len = read_varint(io).await?;
    if len > limit as u64 {
        return Err(FrameError::TooLarge { len, limit }.into());
    }
    let body = read_body(io, len).await?;
    M::decode(body.as_slice()).map_err(|e| FrameError::Decode(e.to_string()).into())
}

/// Reads exactly `len` bytes, growing the buffer as they arrive rather than
/// allocating what the prefix announced up front.
async fn read_body<T: AsyncRead + Unpin>(io: &mut T, len: u64) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::with_capacity(len.min(64 * 1024) as usize);
    io.take(len).read_to_end(&mut body).await.map_err(|_| FrameError::Truncated)?;
    if body.len() as u64 != len {
        return Err(FrameError::Truncated);
    }
    Ok(body)
}

/// Writes one frame and flushes it.
pub async fn write_frame<M, T>(io: &mut T, msg: &M, limit: usize) -> io::Result<()>
where
    M: Message,
    T: AsyncWrite + Unpin,
{
    let len = msg.encoded_len();
    if len > limit {
        return Err(FrameError::TooLarge { len: len as u64, limit }.into());
    }
    io.write_all(&encode_frame(msg)).await?;
    io.flush().await
}

/// A request-response codec for one protocol: protobuf request and response
/// types, each with its own size limit.
pub struct ProtoCodec<Req, Resp> {
    request_limit: usize,
    response_limit: usize,
    budget: Option<std::sync::Arc<InboundBudget>>,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> ProtoCodec<Req, Resp> {
    /// A codec accepting requests up to `request_limit` and responses up to
    /// `response_limit` bytes.
    pub fn new(request_limit: usize, response_limit: usize) -> Self {
        Self { request_limit, response_limit, budget: None, _types: PhantomData }
    }

    /// Inbound request bodies are read only within `budget`, shared with
    /// every other codec holding it.
    pub fn with_budget(mut self, budget: std::sync::Arc<InboundBudget>) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl<Req, Resp> Clone for ProtoCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            request_limit: self.request_limit,
            response_limit: self.response_limit,
            budget: self.budget.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> libp2p::request_response::Codec for ProtoCodec<Req, Resp>
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Default + Send + 'static,
{
    type Protocol = StreamProtocol;
    /// A request that arrived whole but could not be accepted is handed over as
    /// the reason, so the server can answer it with an error instead of closing
    /// the stream on the peer.
    type Request = Result<Req, FrameError>;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        // A bad prefix is refused like an oversized one, from the prefix alone;
        // only a stream that ends early leaves nothing to answer.
        let len = match read_varint(io).await {
            Ok(len) => len,
            Err(FrameError::BadPrefix) => return Ok(Err(FrameError::BadPrefix)),
            Err(e) => return Err(e.into()),
        };
        if len > self.request_limit as u64 {
            return Ok(Err(FrameError::TooLarge { len, limit: self.request_limit }));
        }
        let _held = match &self.budget {
            Some(budget) => match budget.reserve(len as usize) {
                Some(r) => Some(r),
                None => return Ok(Err(FrameError::Busy)),
            },
            None => None,
        };
        let body = read_body(io, len).await?;
        Ok(Req::decode(body.as_slice()).map_err(|e| FrameError::Decode(e.to_string())))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.response_limit).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Self::Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req?, self.request_limit).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, resp: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &resp, self.response_limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealpod_proto::{AttestRequest, StatusRequest};

    #[test]
    fn budget_refuses_what_it_cannot_hold_and_takes_back_what_is_dropped() {
        let budget = InboundBudget::new(100);
        let a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.left(), 0);
        drop(a);
        drop(b);
        assert_eq!(budget.left(), 100);
    }

    #[test]
    fn a_request_over_the_shared_budget_is_answered_busy_not_read() {
        use libp2p::request_response::Codec;
        let budget = InboundBudget::new(1000);
        let _held = budget.reserve(990).unwrap();
        let mut codec = ProtoCodec::<AttestRequest, AttestRequest>::new(1024, 1024).with_budget(budget.clone());
        let frame = encode_frame(&AttestRequest { nonce: vec![1; 32] });
        let mut io = futures::io::Cursor::new(frame);
        let proto = StreamProtocol::new("/t");
        let got = futures::executor::block_on(codec.read_request(&proto, &mut io)).unwrap();
        assert_eq!(got.unwrap_err(), FrameError::Busy);
        assert_eq!(budget.left(), 10);
    }

    #[test]
    fn round_trips_a_frame() {
        let msg = AttestRequest { nonce: vec![7; 32] };
        let buf = encode_frame(&msg);
        let (back, used) = decode_frame::<AttestRequest>(&buf, 1024).unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, buf.len());
    }

    #[test]
    fn refuses_oversized_frame_from_its_prefix_alone() {
        // A prefix announcing 1 GiB followed by nothing: refused without reading.
        let buf = [0x80, 0x80, 0x80, 0x80, 0x04];
        assert_eq!(
            decode_frame::<AttestRequest>(&buf, 1024).unwrap_err(),
            FrameError::TooLarge { len: 1 << 30, limit: 1024 }
        );
    }

    #[test]
    fn refuses_truncated_frame() {
        let mut buf = encode_frame(&AttestRequest { nonce: vec![1; 32] });
        buf.truncate(buf.len() - 1);
        assert_eq!(decode_frame::<AttestRequest>(&buf, 1024).unwrap_err(), FrameError::Truncated);
    }

    #[test]
    fn refuses_overlong_prefix() {
        let buf = [0xff; 11];
        assert_eq!(decode_frame::<AttestRequest>(&buf, usize::MAX).unwrap_err(), FrameError::BadPrefix);
    }

    #[test]
    fn refuses_body_that_is_not_the_expected_message() {
        // Field 1 with wire type 7 (invalid).
        let buf = [2, 0x0f, 0x00];
        assert!(matches!(decode_frame::<StatusRequest>(&buf, 1024), Err(FrameError::Decode(_))));
    }

    #[tokio::test]
    async fn streaming_reader_applies_the_same_limit() {
        let buf = encode_frame(&AttestRequest { nonce: vec![9; 100] });
        let mut cursor = futures::io::Cursor::new(buf.clone());
        let err = read_frame::<AttestRequest, _>(&mut cursor, 10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut cursor = futures::io::Cursor::new(buf);
        let ok = read_frame::<AttestRequest, _>(&mut cursor, 1000).await.unwrap();
        assert_eq!(ok.nonce.len(), 100);
    }
}
