use proptest::prelude::*;

use super::*;

fn header(packet_type: PacketType) -> Header {
    Header {
        packet_type,
        connection_id: 0x1234,
        timestamp: Timestamp(0x0102_0304),
        timestamp_difference: 0x0506_0708,
        wnd_size: 0x000f_0000,
        seq_nr: SeqNr(0xabcd),
        ack_nr: SeqNr(0x0064),
    }
}

fn encode(h: &Header, ext: OutgoingExtensions<'_>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    h.encode(&ext, &mut out);
    out.extend_from_slice(payload);
    out
}

const BODY: [u8; 18] = [
    0x00, 0x12, 0x34, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x00, 0x0f, 0x00, 0x00, 0xab,
    0xcd, 0x00,
];

#[test]
fn fixed_vectors_for_each_type() {
    for (ty, byte0) in [
        (PacketType::Data, 0x01),
        (PacketType::Fin, 0x11),
        (PacketType::State, 0x21),
        (PacketType::Reset, 0x31),
        (PacketType::Syn, 0x41),
    ] {
        let mut want = vec![byte0];
        want.extend_from_slice(&BODY);
        want.push(0x64);
        let payload: &[u8] = if ty == PacketType::Data { b"hi" } else { b"" };
        want.extend_from_slice(payload);
        let got = encode(&header(ty), OutgoingExtensions::default(), payload);
        assert_eq!(got, want, "{ty:?}");
        let p = Packet::parse(&want).expect("valid");
        assert_eq!(*p.header(), header(ty));
        assert_eq!(p.payload(), payload);
        assert_eq!(p.sack(), None);
        assert_eq!(p.close_reason(), None);
    }
}

#[test]
fn sack_bit_order_matches_bep29() {
    // ack_nr = 100; first mask byte 0b0000_0101: packets 102 and 104 arrived.
    let mut h = header(PacketType::State);
    h.ack_nr = SeqNr(100);
    let mut bytes = encode(&h, OutgoingExtensions::default(), b"");
    bytes[1] = SACK_EXTENSION;
    bytes.extend_from_slice(&[0, 4, 0b0000_0101, 0, 0, 0]);
    let p = Packet::parse(&bytes).expect("valid");
    let sack = p.sack().expect("sack");
    assert!(sack.is_set(0) && !sack.is_set(1) && sack.is_set(2));
    let acked: Vec<_> = sack.acked(p.header().ack_nr).collect();
    assert_eq!(acked, vec![SeqNr(102), SeqNr(104)]);

    // Our own mask builder produces the same bytes.
    let mut bits = SelectiveAckBits::default();
    bits.set(0);
    bits.set(2);
    bits.set(40); // out of range: ignored
    assert_eq!(bits.to_bytes(), [0b0000_0101, 0, 0, 0]);
    let ext = OutgoingExtensions {
        sack: Some(&bits.to_bytes()),
        close_reason: None,
    };
    assert_eq!(encode(&h, ext, b""), bytes);
}

#[test]
fn sack_bits_span_bytes_and_wrap() {
    // Byte 1 bit 7 = packet ack_nr + 2 + 15.
    let sack = SelectiveAck::new(&[0, 0x80]);
    let acked: Vec<_> = sack.acked(SeqNr(0xfff0)).collect();
    assert_eq!(acked, vec![SeqNr(0xfff0).add(17)]);
    assert_eq!(acked, vec![SeqNr(1)]);
}

#[test]
fn one_byte_sack_is_accepted() {
    let mut bytes = encode(
        &header(PacketType::State),
        OutgoingExtensions::default(),
        b"",
    );
    bytes[1] = SACK_EXTENSION;
    bytes.extend_from_slice(&[0, 1, 0x01]);
    let p = Packet::parse(&bytes).expect("libtorrent sends 1-byte masks");
    assert_eq!(p.sack().map(|s| s.len_bits()), Some(8));
    assert!(p.payload().is_empty());
}

#[test]
fn emitted_sack_is_padded_to_multiple_of_four() {
    let h = header(PacketType::State);
    for (len, wire) in [(1, 4), (4, 4), (5, 8), (23, 24)] {
        let mask = vec![0xff; len];
        let ext = OutgoingExtensions {
            sack: Some(&mask),
            close_reason: None,
        };
        let bytes = encode(&h, ext, b"");
        assert_eq!(bytes.len(), HEADER_LEN + 2 + wire);
        assert_eq!(bytes.len(), Header::encoded_len(&ext));
        assert_eq!(bytes[21] as usize, wire);
        let p = Packet::parse(&bytes).expect("valid");
        assert_eq!(p.sack().map(|s| s.acked(h.ack_nr).count()), Some(len * 8));
    }
}

#[test]
fn close_reason_goes_after_sack() {
    let h = header(PacketType::Fin);
    let mask = [1, 0, 0, 0];
    let ext = OutgoingExtensions {
        sack: Some(&mask),
        close_reason: Some(0x0102),
    };
    let bytes = encode(&h, ext, b"");
    assert_eq!(bytes[1], SACK_EXTENSION);
    assert_eq!(&bytes[20..], &[3, 4, 1, 0, 0, 0, 0, 4, 0, 0, 1, 2]);
    let p = Packet::parse(&bytes).expect("valid");
    assert_eq!(p.close_reason(), Some(0x0102));
    assert!(p.sack().is_some());

    let only = OutgoingExtensions {
        sack: None,
        close_reason: Some(6),
    };
    let bytes = encode(&h, only, b"");
    // Never first: an empty SACK goes ahead of it, so libutp does not drop the packet.
    assert_eq!(bytes[1], SACK_EXTENSION);
    assert_eq!(&bytes[20..], &[3, 4, 0, 0, 0, 0, 0, 4, 0, 0, 0, 6]);
    assert_eq!(bytes.len(), Header::encoded_len(&only));
    let p = Packet::parse(&bytes).expect("valid");
    assert_eq!(p.close_reason(), Some(6));
    assert_eq!(p.sack().map(|s| s.acked(h.ack_nr).count()), Some(0));
}

#[test]
fn unknown_extensions_are_skipped() {
    // libutp's "extension bits" (type 2, 8 bytes) then an unknown type 9, then payload.
    let mut bytes = encode(&header(PacketType::Syn), OutgoingExtensions::default(), b"");
    bytes[1] = 2;
    bytes.extend_from_slice(&[9, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0, 2, 0xaa, 0xbb]);
    bytes.extend_from_slice(b"xyz");
    let p = Packet::parse(&bytes).expect("valid");
    assert_eq!(p.sack(), None);
    assert_eq!(p.payload(), b"xyz");
    assert!(p.has_extension_bits(), "libutp's fingerprint is noticed");
    let plain = encode(&header(PacketType::Syn), OutgoingExtensions::default(), b"");
    assert!(!Packet::parse(&plain).expect("valid").has_extension_bits());
}

#[test]
fn rejections_are_typed() {
    let good = encode(
        &header(PacketType::Data),
        OutgoingExtensions::default(),
        b"",
    );
    assert_eq!(Packet::parse(&good[..19]), Err(ParseError::TooShort(19)));
    assert_eq!(Packet::parse(&[]), Err(ParseError::TooShort(0)));
    let mut v0 = good.clone();
    v0[0] = 0x00;
    assert_eq!(Packet::parse(&v0), Err(ParseError::BadVersion(0)));
    let mut bad_type = good.clone();
    bad_type[0] = 0x51;
    assert_eq!(Packet::parse(&bad_type), Err(ParseError::BadType(5)));
    let mut trunc = good.clone();
    trunc[1] = SACK_EXTENSION;
    assert_eq!(Packet::parse(&trunc), Err(ParseError::TruncatedExtension));
    trunc.push(0);
    assert_eq!(Packet::parse(&trunc), Err(ParseError::TruncatedExtension));
    trunc.extend_from_slice(&[4, 1, 2, 3]);
    assert_eq!(Packet::parse(&trunc), Err(ParseError::TruncatedExtension));
    trunc.push(4);
    assert!(Packet::parse(&trunc).is_ok());
}

fn arb_type() -> impl Strategy<Value = PacketType> {
    (0u8..5).prop_map(|v| PacketType::from_u8(v).expect("in range"))
}

prop_compose! {
    fn arb_header()(
        packet_type in arb_type(),
        connection_id: u16,
        timestamp: u32,
        timestamp_difference: u32,
        wnd_size: u32,
        seq: u16,
        ack: u16,
    ) -> Header {
        Header {
            packet_type,
            connection_id,
            timestamp: Timestamp(timestamp),
            timestamp_difference,
            wnd_size,
            seq_nr: SeqNr(seq),
            ack_nr: SeqNr(ack),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn parse_never_panics(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
        valid_start in proptest::option::of((0u8..5, 0u8..4)),
    ) {
        // Half the cases get a valid type/version and a plausible first extension so the
        // extension walk is exercised, not just the version check.
        if let (Some((ty, ext)), Some(b)) = (valid_start, bytes.get_mut(..2)) {
            b[0] = (ty << 4) | VERSION;
            b[1] = ext;
        }
        if let Ok(p) = Packet::parse(&bytes) {
            // Whatever parses re-encodes to something that parses to the same packet,
            // modulo SACK padding.
            let mut out = Vec::new();
            p.encode(&mut out);
            let q = Packet::parse(&out).expect("re-encoded packet parses");
            prop_assert_eq!(p.header(), q.header());
            prop_assert_eq!(p.payload(), q.payload());
            prop_assert_eq!(p.close_reason(), q.close_reason());
            // A close reason without a SACK gains an empty one.
            let acked = |p: &Packet<'_>| p.sack().map(|s| s.acked(p.header().ack_nr).collect::<Vec<_>>()).unwrap_or_default();
            prop_assert_eq!(acked(&p), acked(&q));
        }
    }

    #[test]
    fn valid_packets_round_trip_byte_for_byte(
        h in arb_header(),
        sack_words in proptest::option::of(1usize..8),
        sack_seed: u64,
        close_reason in proptest::option::of(any::<u16>()),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mask: Option<Vec<u8>> = sack_words
            .map(|w| (0..w * 4).map(|i| (sack_seed.rotate_left(i as u32 * 7) & 0xff) as u8).collect());
        let ext = OutgoingExtensions { sack: mask.as_deref(), close_reason };
        let bytes = encode(&h, ext, &payload);
        prop_assert_eq!(bytes.len(), Header::encoded_len(&ext) + payload.len());
        let p = Packet::parse(&bytes).expect("encoded packet parses");
        prop_assert_eq!(p.header(), &h);
        prop_assert_eq!(p.payload(), &payload[..]);
        prop_assert_eq!(p.close_reason(), close_reason);
        let sack = mask.or(close_reason.map(|_| vec![0; 4]));
        prop_assert_eq!(p.sack().map(|s| s.as_bytes().to_vec()), sack);
        let mut again = Vec::new();
        p.encode(&mut again);
        prop_assert_eq!(again, bytes);
    }
}
