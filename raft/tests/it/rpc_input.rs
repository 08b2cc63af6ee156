//! Goal: whatever bytes a peer sends as an RPC body, decoding them as
//! openraft's messages returns a value or a typed rejection, never a panic
//! or an unbounded allocation. Method: proptest with arbitrary bytes, and
//! with real encoded messages cut and flipped at random.

use openraft::alias::VoteOf;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use proptest::prelude::*;
use sluice_raft::TypeConfig;
use sluice_raft::transport::rpc::{RpcRejection, decode_body, encode_body};

type C = TypeConfig;

fn vote_request(term: u64, node: u64) -> VoteRequest<C> {
    VoteRequest {
        vote: VoteOf::<C>::new(term, node),
        last_log_id: None,
        leadership_transfer: false,
    }
}

#[test]
fn a_real_vote_request_round_trips() {
    let request = vote_request(7, 2);
    let body = encode_body(&request).expect("encode");
    assert_eq!(decode_body::<VoteRequest<C>>(&body), Ok(request));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_body::<VoteRequest<C>>(&body);
        let _ = decode_body::<AppendEntriesRequest<C>>(&body);
    }

    #[test]
    fn damaged_messages_are_rejected_or_decode_to_something(
        term in any::<u64>(),
        node in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bits in 1u8..=255,
    ) {
        let body = encode_body(&vote_request(term, node)).expect("encode");
        let cut_at = cut.index(body.len());
        let truncated = decode_body::<VoteRequest<C>>(&body[..cut_at]);
        prop_assert!(matches!(truncated, Err(RpcRejection::Malformed(_))), "a cut body never decodes");
        let mut flipped = body.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= bits;
        // A flipped byte may still be a valid message (another term, say):
        // only panics and wrong rejection kinds would be bugs.
        if let Err(e) = decode_body::<VoteRequest<C>>(&flipped) {
            prop_assert_eq!(e.status(), 400);
        }
    }
}
