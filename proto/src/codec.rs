//! The codec every generated client and server uses: prost's, except that a
//! request whose bytes do not decode (not protobuf, a wrong wire type, a
//! string that is not UTF-8) is the caller's fault, `INVALID_ARGUMENT`, not
//! tonic's default `INTERNAL`, which the coordinator would retry as a
//! worker failure. A worker's answer that does not decode stays
//! `INTERNAL`: that is the worker's (or the network's) fault.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::v1 as pb;

/// A message that arrives whole over the wire: what its sender's undecodable
/// bytes mean.
pub trait Inbound: Message + Default + Send + 'static {
    /// The status code of bytes that do not decode as this message.
    const UNDECODABLE: Code;
}

impl Inbound for pb::RenderChunkRequest {
    const UNDECODABLE: Code = Code::InvalidArgument;
}

impl Inbound for pb::DescribeRequest {
    const UNDECODABLE: Code = Code::InvalidArgument;
}

impl Inbound for pb::RenderChunkEvent {
    const UNDECODABLE: Code = Code::Internal;
}

impl Inbound for pb::DescribeResponse {
    const UNDECODABLE: Code = Code::Internal;
}

/// prost's codec with [`Inbound::UNDECODABLE`] as the code of bytes that
/// do not decode.
#[derive(Debug, Clone)]
pub struct WireCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        WireCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: Message + Send + 'static,
    U: Inbound,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder { _pd: PhantomData }
    }
}

/// Decodes `U`, answering undecodable bytes with [`Inbound::UNDECODABLE`].
#[derive(Debug, Clone)]
pub struct WireDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Inbound> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::new(U::UNDECODABLE, format!("undecodable message: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_blame_their_senders() {
        assert_eq!(
            <pb::RenderChunkRequest as Inbound>::UNDECODABLE,
            Code::InvalidArgument
        );
        assert_eq!(
            <pb::RenderChunkEvent as Inbound>::UNDECODABLE,
            Code::Internal
        );
        // What prost says of a string that is not UTF-8 (field 1, job_id).
        let err =
            pb::RenderChunkRequest::decode(&[0x0a, 0x02, 0xff, 0xfe][..]).expect_err("not UTF-8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}
