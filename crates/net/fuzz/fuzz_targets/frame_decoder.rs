//! Arbitrary bytes as a frame of every Apocryph message, under that message's
//! limit: decoding never panics, the buffer decoder and the streaming readers
//! agree on every input, and whatever is accepted survives re-encoding.
//!
//! Run with `cargo fuzz run frame_decoder` from `crates/net` (needs nightly).

#![no_main]

use std::fmt::Debug;
use std::io;

use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;
use libp2p::request_response::Codec;
use libp2p::StreamProtocol;
use sealpod_net::codec::{decode_frame, encode_frame, read_frame, FrameError, ProtoCodec};
use sealpod_proto::{
    limits, AttestRequest, AttestResponse, CapacityRequest, CapacityResponse, Message,
    PodControlRequest, PodControlResponse, ProvisionPodRequest, ProvisionPodResponse,
};

fuzz_target!(|data: &[u8]| {
    request::<AttestRequest>(data, limits::ATTEST_REQUEST);
    request::<CapacityRequest>(data, limits::CAPACITY);
    request::<ProvisionPodRequest>(data, limits::PROVISION_REQUEST);
    request::<PodControlRequest>(data, limits::CONTROL_REQUEST);

    response::<AttestResponse>(data, limits::ATTEST_RESPONSE);
    response::<CapacityResponse>(data, limits::CAPACITY);
    response::<ProvisionPodResponse>(data, limits::PROVISION_RESPONSE);
    response::<PodControlResponse>(data, limits::CONTROL_RESPONSE);
});

/// The refusal carried inside an `io::Error` from the streaming reader.
fn frame_error(e: io::Error) -> FrameError {
    let shown = e.to_string();
    match e.into_inner().map(|inner| inner.downcast::<FrameError>()) {
        Some(Ok(refusal)) => *refusal,
        _ => panic!("streaming reader failed without a FrameError: {shown}"),
    }
}

/// Checks one message type as a frame; returns what the buffer decoder said.
fn frame<M>(data: &[u8], limit: usize) -> Result<M, FrameError>
where
    M: Message + Default + PartialEq + Debug,
{
    let decoded = decode_frame::<M>(data, limit).map(|(msg, used)| {
        assert!(used <= data.len());
        msg
    });
    let streamed = block_on(read_frame::<M, _>(&mut Cursor::new(data), limit)).map_err(frame_error);
    assert_eq!(decoded, streamed, "buffer and streaming decoders disagree");
    if let Ok(msg) = &decoded {
        let again = decode_frame::<M>(&encode_frame(msg), usize::MAX)
            .expect("a re-encoded message decodes")
            .0;
        assert_eq!(&again, msg, "message changed across re-encoding");
    }
    decoded
}

/// The codec reads responses with `read_frame`, which [`frame`] checks.
fn response<M>(data: &[u8], limit: usize)
where
    M: Message + Default + PartialEq + Debug,
{
    let _ = frame::<M>(data, limit);
}

/// As [`frame`], and the libp2p codec reads the same request, answering every
/// refusal except a truncated stream (which has nobody left to answer).
fn request<M>(data: &[u8], limit: usize)
where
    M: Message + Default + PartialEq + Debug + Send + 'static,
{
    let decoded = frame::<M>(data, limit);
    let mut codec = ProtoCodec::<M, M>::new(limit, limit);
    let protocol = StreamProtocol::new("/fuzz");
    let read = block_on(codec.read_request(&protocol, &mut Cursor::new(data)));
    match (decoded, read) {
        (Err(FrameError::Truncated), Err(e)) => {
            assert_eq!(frame_error(e), FrameError::Truncated)
        }
        (decoded, Ok(read)) => assert_eq!(decoded, read, "codec and buffer decoder disagree"),
        (decoded, Err(e)) => panic!("codec failed with {e} where the decoder said {decoded:?}"),
    }
}
