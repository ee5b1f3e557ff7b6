//! The bytes on a data connection, pinned: two builds of Floe on two hosts
//! must agree on them byte for byte.

use floe_core::JobId;
use floe_network::TaskManagerId;
use floe_network::wire::{self, ChannelKey, HandshakeStatus, Message, Parsed};
use floe_runtime::remote::ChannelId;

fn key() -> ChannelKey {
    ChannelKey {
        job: JobId::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
        attempt: 3,
        channel: ChannelId {
            edge: 1,
            sender: 2,
            receiver: 0x0504,
        },
    }
}

const SCOPE: [u8; 36] = [
    0x10, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02,
    0x01, // job
    3, 0, 0, 0, 0, 0, 0, 0, // attempt
    1, 0, 0, 0, // edge
    2, 0, 0, 0, // sender
    4, 5, 0, 0, // receiver
];

#[test]
fn the_handshake_is_pinned() {
    let hello = wire::encode_hello(TaskManagerId(0xabcd));
    assert_eq!(
        hello,
        [
            b'F', b'L', b'N', b'W', 1, 0, 0xcd, 0xab, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]
    );
    let reply = wire::encode_reply(TaskManagerId(0xabcd), HandshakeStatus::Duplicate);
    assert_eq!(reply[..22], hello);
    assert_eq!(reply[22], 1);
    let (h, s) = wire::decode_reply(&reply).unwrap();
    assert_eq!(
        (h.id, h.version, s),
        (TaskManagerId(0xabcd), 1, HandshakeStatus::Duplicate)
    );
}

#[test]
fn the_data_message_header_is_pinned() {
    let mut out = Vec::new();
    wire::put_data(&mut out, &key(), 7, &[4]);
    let mut want = vec![42, 0, 0, 0, 1];
    want.extend_from_slice(&SCOPE);
    want.extend_from_slice(&[7, 0, 0, 0, 4]);
    assert_eq!(out, want);
    assert_eq!(out.len(), wire::DATA_HEADER_LEN + 1);
    assert_eq!(
        wire::parse(&out, 1 << 20).unwrap(),
        Parsed::Message(
            Message::Data {
                key: key(),
                backlog: 7,
                payload: &[4]
            },
            out.len()
        )
    );
}

#[test]
fn the_credit_message_is_pinned() {
    let mut out = Vec::new();
    wire::put_credit(&mut out, &key(), 0x0102);
    let mut want = vec![41, 0, 0, 0, 2];
    want.extend_from_slice(&SCOPE);
    want.extend_from_slice(&[2, 1, 0, 0]);
    assert_eq!(out, want);
    assert_eq!(out.len(), wire::CREDIT_LEN);
    assert_eq!(
        wire::parse(&out, 1 << 20).unwrap(),
        Parsed::Message(
            Message::Credit {
                key: key(),
                credits: 0x0102
            },
            out.len()
        )
    );
}

#[test]
fn a_partial_message_asks_for_more() {
    let mut out = Vec::new();
    wire::put_data(&mut out, &key(), 0, &[9; 100]);
    assert_eq!(
        wire::parse(&out[..3], 1 << 20).unwrap(),
        Parsed::Incomplete(0)
    );
    assert_eq!(
        wire::parse(&out[..50], 1 << 20).unwrap(),
        Parsed::Incomplete(out.len())
    );
}

proptest::proptest! {
    /// Any bytes parse to a message, a request for more, or an error:
    /// never a panic.
    #[test]
    fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        let _ = wire::parse(&bytes, 1 << 16);
        if bytes.len() >= wire::HELLO_LEN {
            let _ = wire::decode_hello(bytes[..wire::HELLO_LEN].try_into().unwrap());
        }
    }
}
