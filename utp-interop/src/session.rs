//! One peer-wire session over any byte stream: download a whole torrent with SHA-1 checks,
//! or seed one. Written for [`UtpStream`](utp_tokio::UtpStream), tested over in-memory pipes.
//!
//! The order of the opening messages matters for Transmission 3.00: it handles bytes that
//! arrive in the same read as the peer's handshake only at its next read (INTEROP §4). So the
//! handshake is always written alone, and after the handshakes are exchanged we wait (up to
//! [`SessionConfig::first_message_wait`]) for the peer's first message before sending ours.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::torrent::Torrent;
use crate::wire::{self, BLOCK_SIZE, Bitfield, Handshake, Message};

/// Who opened the connection, which decides who sends the handshake first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We dialed: our handshake goes first.
    Initiator,
    /// The peer dialed: we read its handshake, check the info-hash, then answer.
    Acceptor,
}

/// Settings of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our peer id.
    pub peer_id: [u8; 20],
    /// Advertise the Fast extension (BEP 6), so `have_all` / `have_none` can be used and
    /// both clients announce what they have at once (default true).
    pub fast_extension: bool,
    /// Block requests kept outstanding while downloading (default 64, 1 MiB).
    pub pipeline: usize,
    /// After the handshakes, how long to wait for the peer's first message before sending
    /// ours (default 1 s; see the module docs).
    pub first_message_wait: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            peer_id: *b"-UR0001-utpinterop00",
            fast_extension: true,
            pipeline: 64,
            first_message_wait: Duration::from_secs(1),
        }
    }
}

/// What a finished session did.
#[derive(Debug, Clone)]
pub struct SessionReport {
    /// The peer's handshake.
    pub peer: Handshake,
    /// Piece payload bytes received (download) or sent (seed).
    pub bytes: u64,
    /// From the first block sent or received to the last one (download), or to the peer's
    /// completion signal or end of stream (seed).
    pub transfer_time: Duration,
    /// From the start of the session to its end.
    pub total_time: Duration,
    /// Pieces verified against their SHA-1 (download) or pieces the peer announced having
    /// (seed).
    pub pieces: usize,
    /// Whether the peer closed the stream (end of stream read) before the session ended.
    pub peer_closed: bool,
    /// Every message received, by name, with counts (for diagnostics).
    pub received: Vec<(String, u64)>,
}

impl SessionReport {
    /// Throughput over [`transfer_time`](Self::transfer_time) in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.transfer_time.as_secs_f64().max(1e-6) / 1e6
    }
}

/// Why a session failed.
#[derive(Debug)]
pub enum SessionError {
    /// The stream failed.
    Io(io::Error),
    /// The peer broke the protocol or sent the wrong data.
    Protocol(String),
    /// A piece did not match its SHA-1.
    HashMismatch(usize),
    /// The peer closed before the download completed.
    Eof {
        /// Pieces verified by then.
        pieces: usize,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "stream error: {e} ({:?})", e.kind()),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::HashMismatch(i) => write!(f, "piece {i} failed its SHA-1 check"),
            Self::Eof { pieces } => write!(f, "peer closed after {pieces} verified pieces"),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<io::Error> for SessionError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn protocol(msg: impl Into<String>) -> SessionError {
    SessionError::Protocol(msg.into())
}

#[derive(Default)]
struct Counts(Vec<(String, u64)>);

impl Counts {
    fn add(&mut self, m: &Message) {
        let name = format!("{m:?}");
        let name = name.split('(').next().unwrap_or_default().to_owned();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.0.push((name, 1)),
        }
    }
}

/// Exchange handshakes (ours alone in its write), then wait up to `first_message_wait` for
/// the peer's first message, which is returned.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    torrent: &Torrent,
    role: Role,
    config: &SessionConfig,
) -> Result<(Handshake, Option<Message>), SessionError> {
    let mut ours = Handshake::new(torrent.info_hash(), config.peer_id);
    if config.fast_extension {
        ours = ours.with_fast_extension();
    }
    if role == Role::Initiator {
        stream.write_all(&ours.encode()).await?;
        stream.flush().await?;
    }
    let theirs = Handshake::read_from(stream).await?;
    if theirs.info_hash != torrent.info_hash() {
        return Err(protocol(format!(
            "peer wants info-hash {}",
            wire::hex(&theirs.info_hash)
        )));
    }
    if role == Role::Acceptor {
        stream.write_all(&ours.encode()).await?;
        stream.flush().await?;
    }
    // Wait for one byte only: a timeout then cannot cut a message in half.
    let mut byte = [0u8; 1];
    let first = match tokio::time::timeout(config.first_message_wait, stream.read(&mut byte)).await
    {
        Ok(Ok(0)) => return Err(SessionError::Eof { pieces: 0 }),
        Ok(Ok(_)) => match wire::read_message_after(stream, &byte).await? {
            Some(m) => Some(m),
            None => return Err(SessionError::Eof { pieces: 0 }),
        },
        Ok(Err(e)) => return Err(e.into()),
        Err(_elapsed) => None,
    };
    Ok((theirs, first))
}

/// Download all of `torrent` from the peer on `stream`, verifying every piece. Returns the
/// data and a report once every piece passed its SHA-1 check and `NotInterested` was sent;
/// the stream is left open for the caller to close.
pub async fn download<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    torrent: &Torrent,
    role: Role,
    config: &SessionConfig,
) -> Result<(Vec<u8>, SessionReport), SessionError> {
    let started = Instant::now();
    let (peer, first) = open(stream, torrent, role, config).await?;
    let fast = config.fast_extension && peer.supports_fast();
    let n = torrent.num_pieces();

    let mut opening = Vec::new();
    if fast {
        opening.push(Message::HaveNone);
    }
    opening.push(Message::Interested);
    wire::write_messages(stream, &opening).await?;

    let mut data = vec![0u8; torrent.length() as usize];
    let mut have = Bitfield::empty(n);
    let mut peer_has = Bitfield::empty(n);
    let mut received_in_piece = vec![0u32; n];
    // Blocks not yet requested, in order; and those requested and not yet received.
    let mut queue: VecDeque<(u32, u32, u32)> = VecDeque::new();
    for i in 0..n {
        let len = torrent.piece_len(i);
        let mut begin = 0;
        while begin < len {
            queue.push_back((i as u32, begin, BLOCK_SIZE.min(len - begin)));
            begin += BLOCK_SIZE;
        }
    }
    let mut in_flight: Vec<(u32, u32, u32)> = Vec::new();
    let mut choked = true;
    let mut counts = Counts::default();
    let mut bytes = 0u64;
    let mut first_block = None;
    let mut pending = first;

    while !have.is_complete() {
        let msg = match pending.take() {
            Some(m) => m,
            None => match wire::read_message(stream).await? {
                Some(m) => m,
                None => {
                    return Err(SessionError::Eof {
                        pieces: have.count(),
                    });
                }
            },
        };
        counts.add(&msg);
        match msg {
            Message::Unchoke => choked = false,
            Message::Choke => {
                choked = true;
                if !fast {
                    // Without BEP 6 a choke discards our requests: ask again later.
                    for r in in_flight.drain(..).rev() {
                        queue.push_front(r);
                    }
                }
            }
            Message::Reject {
                index,
                begin,
                length,
            } => {
                if let Some(pos) = in_flight.iter().position(|&r| r == (index, begin, length)) {
                    queue.push_front(in_flight.swap_remove(pos));
                }
            }
            Message::Have(i) => peer_has.set(i as usize),
            Message::HaveAll => peer_has = Bitfield::full(n),
            Message::Bitfield(bits) => {
                peer_has = Bitfield::from_bytes(n, &bits).map_err(io::Error::from)?;
            }
            Message::Piece {
                index,
                begin,
                data: block,
            } => {
                let key = (index, begin, block.len() as u32);
                let Some(pos) = in_flight.iter().position(|&r| r == key) else {
                    // Unrequested or duplicate (after a re-request): ignore.
                    continue;
                };
                in_flight.swap_remove(pos);
                first_block.get_or_insert_with(Instant::now);
                let i = index as usize;
                let off = torrent.piece_offset(i) + begin as usize;
                data[off..off + block.len()].copy_from_slice(&block);
                bytes += block.len() as u64;
                received_in_piece[i] += block.len() as u32;
                if received_in_piece[i] == torrent.piece_len(i) {
                    let start = torrent.piece_offset(i);
                    let piece = &data[start..start + torrent.piece_len(i) as usize];
                    if !torrent.verify_piece(i, piece) {
                        return Err(SessionError::HashMismatch(i));
                    }
                    have.set(i);
                    wire::write_messages(stream, &[Message::Have(index)]).await?;
                }
            }
            _ => {}
        }
        if !choked && !have.is_complete() {
            let mut requests = Vec::new();
            while in_flight.len() < config.pipeline {
                let Some(pos) = queue.iter().position(|&(i, _, _)| peer_has.get(i as usize)) else {
                    break;
                };
                let r = queue.remove(pos).expect("position is in range");
                in_flight.push(r);
                requests.push(Message::Request {
                    index: r.0,
                    begin: r.1,
                    length: r.2,
                });
            }
            if !requests.is_empty() {
                wire::write_messages(stream, &requests).await?;
            }
        }
    }
    let transfer_time = first_block.map_or(Duration::ZERO, |t| t.elapsed());
    wire::write_messages(stream, &[Message::NotInterested]).await?;
    Ok((
        data,
        SessionReport {
            peer,
            bytes,
            transfer_time,
            total_time: started.elapsed(),
            pieces: have.count(),
            peer_closed: false,
            received: counts.0,
        },
    ))
}

/// When [`seed`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedUntil {
    /// As soon as the peer has every piece (`have` for each, or `NotInterested` after every
    /// piece was sent), leaving the stream open.
    PeerComplete,
    /// Only when the peer closes the stream (end of stream).
    PeerCloses,
}

/// Seed `data` (the whole file of `torrent`) to the peer on `stream`: announce every piece,
/// unchoke on interest and answer requests.
pub async fn seed<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    torrent: &Torrent,
    data: &[u8],
    role: Role,
    until: SeedUntil,
    config: &SessionConfig,
) -> Result<SessionReport, SessionError> {
    assert_eq!(
        data.len() as u64,
        torrent.length(),
        "data is the torrent's file"
    );
    let started = Instant::now();
    let (peer, first) = open(stream, torrent, role, config).await?;
    let fast = config.fast_extension && peer.supports_fast();
    let n = torrent.num_pieces();
    let announce = if fast {
        Message::HaveAll
    } else {
        Message::Bitfield(Bitfield::full(n).as_bytes().to_vec())
    };
    wire::write_messages(stream, &[announce]).await?;

    let mut peer_has = Bitfield::empty(n);
    let mut sent = Bitfield::empty(n);
    let mut sent_bytes_in_piece = vec![0u64; n];
    let mut unchoked = false;
    let mut counts = Counts::default();
    let mut bytes = 0u64;
    let mut first_block: Option<Instant> = None;
    let mut complete_at: Option<Instant> = None;
    let mut pending = first;
    let mut peer_closed = false;
    loop {
        if until == SeedUntil::PeerComplete && complete_at.is_some() {
            break;
        }
        let msg = match pending.take() {
            Some(m) => m,
            None => match wire::read_message(stream).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    peer_closed = true;
                    break;
                }
                Err(e) if complete_at.is_some() => {
                    // The peer has everything; a reset now is its close, not our failure.
                    return Err(protocol(format!(
                        "peer completed but then the stream failed: {e} ({:?})",
                        e.kind()
                    )));
                }
                Err(e) => return Err(e.into()),
            },
        };
        counts.add(&msg);
        match msg {
            Message::Interested if !unchoked => {
                unchoked = true;
                wire::write_messages(stream, &[Message::Unchoke]).await?;
            }
            Message::Request {
                index,
                begin,
                length,
            } => {
                let i = index as usize;
                let valid = i < n
                    && length <= 128 * 1024
                    && u64::from(begin) + u64::from(length) <= u64::from(torrent.piece_len(i));
                if !valid {
                    return Err(protocol(format!("bad request {index} {begin} {length}")));
                }
                if !unchoked {
                    if fast {
                        wire::write_messages(
                            stream,
                            &[Message::Reject {
                                index,
                                begin,
                                length,
                            }],
                        )
                        .await?;
                    }
                    continue;
                }
                let off = torrent.piece_offset(i) + begin as usize;
                let block = data[off..off + length as usize].to_vec();
                first_block.get_or_insert_with(Instant::now);
                wire::write_messages(
                    stream,
                    &[Message::Piece {
                        index,
                        begin,
                        data: block,
                    }],
                )
                .await?;
                bytes += u64::from(length);
                sent_bytes_in_piece[i] += u64::from(length);
                if sent_bytes_in_piece[i] >= u64::from(torrent.piece_len(i)) {
                    sent.set(i);
                }
            }
            Message::Have(i) => peer_has.set(i as usize),
            Message::HaveAll => peer_has = Bitfield::full(n),
            Message::Bitfield(bits) => {
                peer_has = Bitfield::from_bytes(n, &bits).map_err(io::Error::from)?;
            }
            Message::NotInterested if sent.is_complete() => {
                complete_at.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
        if peer_has.is_complete() {
            complete_at.get_or_insert_with(Instant::now);
        }
    }
    let end = complete_at.unwrap_or_else(Instant::now);
    Ok(SessionReport {
        peer,
        bytes,
        transfer_time: first_block.map_or(Duration::ZERO, |t| end.saturating_duration_since(t)),
        total_time: started.elapsed(),
        pieces: peer_has.count(),
        peer_closed,
        received: counts.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrent::payload;

    fn torrent(len: usize) -> (Torrent, Vec<u8>) {
        let data = payload(9, len);
        (Torrent::create("t.bin", &data, 64 * 1024, None), data)
    }

    #[tokio::test]
    async fn download_from_our_own_seeder_over_a_pipe() {
        let (t, data) = torrent(1_000_000);
        let (mut a, mut b) = tokio::io::duplex(32 * 1024);
        let seeder = {
            let (t, data) = (t.clone(), data.clone());
            tokio::spawn(async move {
                seed(
                    &mut b,
                    &t,
                    &data,
                    Role::Acceptor,
                    SeedUntil::PeerCloses,
                    &SessionConfig::default(),
                )
                .await
            })
        };
        let (got, report) = download(&mut a, &t, Role::Initiator, &SessionConfig::default())
            .await
            .unwrap();
        assert_eq!(got, data);
        assert_eq!(report.pieces, t.num_pieces());
        assert_eq!(report.bytes, 1_000_000);
        drop(a);
        let s = seeder.await.unwrap().unwrap();
        assert!(s.peer_closed);
        assert_eq!(s.bytes, 1_000_000);
        assert_eq!(s.pieces, t.num_pieces(), "a Have for every piece");
    }

    #[tokio::test]
    async fn without_fast_extension_uses_bitfield() {
        let (t, data) = torrent(200_000);
        let config = SessionConfig {
            fast_extension: false,
            first_message_wait: Duration::from_millis(50),
            ..SessionConfig::default()
        };
        let (mut a, mut b) = tokio::io::duplex(8 * 1024);
        let seeder = {
            let (t, data, config) = (t.clone(), data.clone(), config.clone());
            tokio::spawn(async move {
                seed(
                    &mut b,
                    &t,
                    &data,
                    Role::Initiator,
                    SeedUntil::PeerComplete,
                    &config,
                )
                .await
            })
        };
        let (got, report) = download(&mut a, &t, Role::Acceptor, &config).await.unwrap();
        assert_eq!(got, data);
        assert!(report.received.iter().any(|(n, _)| n == "Bitfield"));
        let s = seeder.await.unwrap().unwrap();
        assert!(!s.peer_closed);
    }

    /// A seeder that sends one corrupt block is caught by the SHA-1 check.
    #[tokio::test]
    async fn corrupt_piece_is_detected() {
        let (t, data) = torrent(200_000);
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let info_hash = t.info_hash();
        let evil = tokio::spawn(async move {
            let theirs = Handshake::read_from(&mut b).await.unwrap();
            assert_eq!(theirs.info_hash, info_hash);
            b.write_all(&Handshake::new(info_hash, [7; 20]).encode())
                .await
                .unwrap();
            wire::write_messages(&mut b, &[Message::Bitfield(vec![0xf0]), Message::Unchoke])
                .await
                .unwrap();
            loop {
                match wire::read_message(&mut b).await {
                    Ok(Some(Message::Request {
                        index,
                        begin,
                        length,
                    })) => {
                        let off = index as usize * 65536 + begin as usize;
                        let mut block = data[off..off + length as usize].to_vec();
                        if index == 2 && begin == 0 {
                            block[0] ^= 0xff;
                        }
                        let piece = Message::Piece {
                            index,
                            begin,
                            data: block,
                        };
                        if wire::write_messages(&mut b, &[piece]).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(_)) => {}
                    _ => return,
                }
            }
        });
        let err = download(&mut a, &t, Role::Initiator, &SessionConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, SessionError::HashMismatch(2)), "{err}");
        drop(a);
        evil.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_info_hash_is_refused() {
        let (t, _) = torrent(100_000);
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            b.write_all(&Handshake::new([0; 20], [1; 20]).encode())
                .await
                .unwrap();
            let mut sink = Vec::new();
            let _ = b.read_to_end(&mut sink).await;
        });
        let err = download(&mut a, &t, Role::Acceptor, &SessionConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, SessionError::Protocol(_)), "{err}");
    }

    /// The handshake goes out in a write of its own, and nothing follows it until the
    /// peer's first message (the Transmission 3.00 stall, INTEROP §4).
    #[tokio::test]
    async fn acceptor_sends_the_handshake_alone() {
        let (t, data) = torrent(100_000);
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let info_hash = t.info_hash();
        let seeder = tokio::spawn(async move {
            seed(
                &mut b,
                &t,
                &data,
                Role::Acceptor,
                SeedUntil::PeerCloses,
                &SessionConfig::default(),
            )
            .await
        });
        a.write_all(
            &Handshake::new(info_hash, [2; 20])
                .with_fast_extension()
                .encode(),
        )
        .await
        .unwrap();
        let mut hs = [0u8; 68];
        a.read_exact(&mut hs).await.unwrap();
        let mut more = [0u8; 1];
        let quiet = tokio::time::timeout(Duration::from_millis(300), a.read(&mut more)).await;
        assert!(quiet.is_err(), "nothing may follow the handshake yet");
        wire::write_messages(&mut a, &[Message::HaveNone])
            .await
            .unwrap();
        assert_eq!(
            wire::read_message(&mut a).await.unwrap(),
            Some(Message::HaveAll)
        );
        drop(a);
        assert!(seeder.await.unwrap().unwrap().peer_closed);
    }
}
