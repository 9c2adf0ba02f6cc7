//! The `packet` target: parse, and round-trip what parses.

use utp_proto::packet::{Header, OutgoingExtensions};
use utp_proto::{Packet, SeqNr};

use super::HEADER_LEN;

/// Longest SACK body the encoder writes.
const MAX_SACK_LEN: usize = 252;

/// Parse arbitrary bytes; if they parse, the re-encoded packet must parse to the same packet
/// and be a fixed point of encode ∘ parse.
pub fn fuzz_packet(data: &[u8]) {
    let packet = match Packet::parse(data) {
        Ok(p) => p,
        Err(e) => {
            if data.len() < HEADER_LEN {
                assert_eq!(e, utp_proto::ParseError::TooShort(data.len()));
            }
            return;
        }
    };
    assert!(
        data.len() >= HEADER_LEN,
        "parsed a {}-byte datagram",
        data.len()
    );
    let h = *packet.header();
    assert!(packet.payload().len() <= data.len() - HEADER_LEN);
    assert!(
        data.ends_with(packet.payload()),
        "payload is the datagram's tail"
    );

    let mut out = Vec::new();
    packet.encode(&mut out);
    let ext = OutgoingExtensions {
        sack: packet.sack().map(|s| s.as_bytes()),
        close_reason: packet.close_reason(),
    };
    assert_eq!(
        out.len(),
        Header::encoded_len(&ext) + packet.payload().len()
    );
    // Every fixed-header byte but the extension type survives.
    assert_eq!(out[0], data[0]);
    assert_eq!(out[2..HEADER_LEN], data[2..HEADER_LEN]);

    let again = Packet::parse(&out).expect("an encoded packet parses");
    assert_eq!(again.header(), &h);
    assert_eq!(again.payload(), packet.payload());
    assert_eq!(again.close_reason(), packet.close_reason());
    match (packet.sack(), again.sack()) {
        (None, None) => {}
        (None, Some(b)) => {
            // A close reason never goes first: an empty SACK is put ahead of it.
            assert!(packet.close_reason().is_some() && b.as_bytes() == [0; 4]);
        }
        (Some(a), Some(b)) => {
            // Encoding pads the mask with zeros to a multiple of 4 and truncates it to 252.
            let kept = &a.as_bytes()[..a.as_bytes().len().min(MAX_SACK_LEN)];
            let b = b.as_bytes();
            assert!(b.len() % 4 == 0 && b.len() >= 4 && b.len() <= MAX_SACK_LEN);
            assert_eq!(&b[..kept.len()], kept);
            assert!(b[kept.len()..].iter().all(|&x| x == 0));
            // The iterator and the bit test agree, and stay within the mask.
            let acked: Vec<SeqNr> = a.acked(h.ack_nr).collect();
            let ones: u32 = a.as_bytes().iter().map(|b| b.count_ones()).sum();
            assert_eq!(acked.len(), ones as usize);
            for s in acked {
                let i = usize::from(h.ack_nr.add(2).distance_to(s));
                assert!(i < a.len_bits() && a.is_set(i));
            }
        }
        (a, b) => panic!("SACK lost or invented in a round trip: {a:?} vs {b:?}"),
    }
    let mut out2 = Vec::new();
    again.encode(&mut out2);
    assert_eq!(out, out2, "encode ∘ parse is a fixed point");
}
