//! Epoch keying: two twnode ends agree on fresh SAs at every start and every rekey, so
//! that nothing any end forgets (its state directory, a VM snapshot's disk, a fresh
//! container) can make it send a sequence number twice under one key.
//!
//! # The exchange
//!
//! Each end holds a 256-bit nonce R, drawn fresh at start and at each rekey, and sends
//! it in Hellos ([`crate::wire::esp_hello`]) that also echo the peer's R as last seen,
//! authenticated with the Hello key of the sender's direction. An *epoch* is a pair of
//! nonces; its SAs are [`EpochSecrets::epoch_sas`] of both. An end **agrees** on the
//! epoch (its R, the peer's R') when an authenticated Hello from the peer carries R' and
//! echoes the end's current R, and that R is not spent in an earlier epoch. From then
//! on it sends under the new SAs (sequence numbers from 1) and answers with a Hello
//! flagged *confirmed*, which makes the peer agree too (as does the first data packet
//! that opens under the new SAs). With no loss: three Hellos.
//!
//! ```text
//!   A (R=a)                         B (R=b)
//!   Hello(a, echo -)       ---->    learns a
//!                          <----    Hello(b, echo a)
//!   agrees (a, b)
//!   Hello(a, echo b, confirmed) --> agrees (b, a)
//! ```
//!
//! Why this is safe:
//!
//! - Every epoch an end agrees on contains its own current R, drawn after it started:
//!   no packet sent before (by anyone, under any old epoch) opens under the new SAs, so
//!   replayed data and replayed Hellos from before a restart are refused even by an end
//!   that lost all its state. Only the live peer can echo a fresh R.
//! - An R is spent by the first epoch that uses it: to move on, an end draws a new R
//!   (a rekey, or the peer brought a new R of its own), so no epoch is agreed twice and
//!   no sequence number restarts under old SAs.
//! - A running end keeps its epoch until a new one is agreed: a Hello (replayed or not)
//!   never makes it drop the SAs it sends with. The previous inbound SA stays for
//!   [`PREVIOUS_GRACE`], so packets in flight during a switch are taken.
//! - Replays of Hellos are cut short by the timestamp (not newer than one seen with the
//!   same nonce: dropped) and by the nonces of superseded epochs (retired: dropped). A
//!   Hello replayed from a previous run of the peer looks like a restarted peer: it can
//!   make the ends rekey (at most once a second), never accept old packets.
//!
//! Rekeys: an end starts one after its rekey interval (the end at the higher address
//! waits an eighth longer, so both rarely start at once; when they do, the exchange
//! still converges) or [`REKEY_AFTER_PACKETS`] packets sent, and never sends more than
//! [`REJECT_AFTER_PACKETS`] under one key. Hellos are sent again after 1 s, then 2, 4
//! and 8 s while an end waits, and at most [`HELLOS_PER_SEC`] a second.
//!
//! Rules: as the rest of the core: no I/O, no clock, no randomness of its own (fresh
//! nonces come from the caller), no panic.

use std::fmt;
use std::time::{Duration, Instant};

use super::kdf::{EpochSecrets, KdfError};
use super::{
    header, Cipher, Decap, EpochParams, EpochStatus, EspStatus, Inbound, Keying, Nonce, Outbound,
};
use crate::tunnel::pmtu::RateLimit;
use crate::tunnel::DropReason;
use crate::wire::esp_hello::{self as hello, HELLO_LEN, HELLO_SPI, NONCE_LEN};

/// Packets sent under one epoch before this end starts a rekey.
pub const REKEY_AFTER_PACKETS: u64 = 1 << 31;
/// Packets sent under one epoch after which this end sends nothing more under it.
pub const REJECT_AFTER_PACKETS: u64 = 1 << 32;
/// The rekey interval unless configured.
pub const DEFAULT_REKEY_AFTER: Duration = Duration::from_secs(3600);
/// How long a waiting end waits for an answer before it sends its Hello again (then
/// twice as long each time, up to [`MAX_RETRANSMIT`]).
pub const FIRST_RETRANSMIT: Duration = Duration::from_secs(1);
/// The longest wait between two Hellos of a waiting end.
pub const MAX_RETRANSMIT: Duration = Duration::from_secs(8);
/// How long the previous epoch's inbound SA is kept after a switch.
pub const PREVIOUS_GRACE: Duration = Duration::from_secs(30);
/// Hellos sent per second at most (a burst of [`HELLO_BURST`]).
pub const HELLOS_PER_SEC: u32 = 10;
const HELLO_BURST: u32 = 5;
/// A new nonce at most this often, whatever the peer's Hellos say.
const NEW_NONCE_GAP: Duration = Duration::from_secs(1);
/// Nonces of superseded epochs remembered as retired.
const RETIRED: usize = 16;

/// An agreed epoch: its nonces and its two SAs.
#[derive(Debug, Clone)]
struct Epoch {
    mine: Nonce,
    theirs: Nonce,
    out: Outbound,
    inb: Inbound,
    agreed_at: Instant,
}

/// The epoch state of one line.
#[derive(Clone)]
pub(super) struct Epochs {
    secrets: EpochSecrets,
    cipher: Cipher,
    /// This end's rekey timer.
    rekey_after: Duration,
    /// Hello timestamps count from here.
    born: Instant,
    last_ts: u64,
    /// This end's current nonce, and whether an agreed epoch has spent it.
    mine: Nonce,
    mine_used: bool,
    /// A new nonce is wanted (rekey, or the peer brought a new one while ours is spent).
    need_nonce: bool,
    last_pick: Instant,
    /// The peer's latest nonce and the newest timestamp seen with it.
    theirs: Option<Nonce>,
    theirs_ts: u64,
    /// Peer nonces of superseded epochs: Hellos carrying them are replays.
    retired: [Option<Nonce>; RETIRED],
    next_retired: usize,
    current: Option<Epoch>,
    /// The inbound SA of (mine, theirs) while `mine` is not spent: the peer's first
    /// packet under it agrees on the epoch.
    candidate: Option<(Nonce, Inbound)>,
    /// The previous epoch's inbound SA, until the instant given.
    previous: Option<(Inbound, Instant)>,
    /// A Hello should go out at the next poll.
    hello_due: bool,
    /// While waiting: when the Hello is sent again, and the wait after that.
    retransmit_at: Option<Instant>,
    backoff: Duration,
    hellos: RateLimit,
    agreed: u64,
    hellos_sent: u64,
    hellos_received: u64,
}

impl fmt::Debug for Epochs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epochs")
            .field("mine", &self.mine)
            .field("theirs", &self.theirs)
            .field("agreed", &self.agreed)
            .field(
                "current",
                &self.current.as_ref().map(|c| (c.mine, c.theirs)),
            )
            .finish_non_exhaustive()
    }
}

impl Epochs {
    pub(super) fn new(p: EpochParams<'_>, mine: Nonce, now: Instant) -> Result<Epochs, KdfError> {
        let secrets = EpochSecrets::new(p.cipher, p.enc_key, p.auth_key, p.local, p.peer)?;
        let rekey_after = if p.local < p.peer {
            p.rekey_after
        } else {
            p.rekey_after + p.rekey_after / 8
        };
        Ok(Epochs {
            secrets,
            cipher: p.cipher,
            rekey_after,
            born: now,
            last_ts: 0,
            mine,
            mine_used: false,
            need_nonce: false,
            last_pick: now,
            theirs: None,
            theirs_ts: 0,
            retired: [None; RETIRED],
            next_retired: 0,
            current: None,
            candidate: None,
            previous: None,
            hello_due: true,
            retransmit_at: None,
            backoff: FIRST_RETRANSMIT,
            hellos: RateLimit::new(HELLOS_PER_SEC, HELLO_BURST),
            agreed: 0,
            hellos_sent: 0,
            hellos_received: 0,
        })
    }

    /// Seals with the current epoch's outbound SA; nothing before the first epoch, nor
    /// past [`REJECT_AFTER_PACKETS`].
    pub(super) fn encapsulate(
        &mut self,
        buf: &mut [u8],
        len: usize,
        next_header: u8,
    ) -> Result<usize, DropReason> {
        let Some(c) = self.current.as_mut() else {
            return Err(DropReason::NoSession);
        };
        c.out.seal(buf, len, next_header).map_err(|r| match r {
            DropReason::SeqNotReserved => DropReason::NoSession,
            other => other,
        })
    }

    pub(super) fn decapsulate<'a>(
        &mut self,
        packet: &'a mut [u8],
        now: Instant,
    ) -> Result<Decap<'a>, DropReason> {
        if packet.get(..4) == Some(&HELLO_SPI.to_be_bytes()[..]) {
            self.handle_hello(packet, now)?;
            return Ok(Decap::Hello);
        }
        let (spi, low, iv) = header(packet)?;
        if self
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.previous = None;
        }
        let data = |(next_header, payload)| Decap::Packet {
            next_header,
            payload,
        };
        if let Some(c) = self.current.as_mut().filter(|c| c.inb.spi() == spi) {
            return c.inb.open(packet, low, iv).map(data);
        }
        if let Some((theirs, inb)) = self.candidate.as_mut().filter(|(_, i)| i.spi() == spi) {
            let theirs = *theirs;
            let opened = inb.open(packet, low, iv)?;
            // Only the peer that agreed on (mine, theirs) can seal under it.
            self.agree(theirs, now);
            return Ok(data(opened));
        }
        if let Some((inb, _)) = self.previous.as_mut().filter(|(i, _)| i.spi() == spi) {
            return inb.open(packet, low, iv).map(data);
        }
        Err(DropReason::UnknownSpi)
    }

    fn handle_hello(&mut self, packet: &[u8], now: Instant) -> Result<(), DropReason> {
        let p = hello::Packet::new_checked(packet).map_err(|e| match e {
            crate::wire::Error::Truncated => DropReason::Truncated,
            _ => DropReason::Malformed,
        })?;
        let h = hello::Repr::parse(&p).map_err(|_| DropReason::Malformed)?;
        if !self.secrets.verify(p.authenticated(), p.mac()) {
            return Err(DropReason::BadAuth);
        }
        let nonce = Nonce(h.nonce);
        if self.retired.contains(&Some(nonce))
            || self.theirs == Some(nonce) && h.timestamp <= self.theirs_ts
        {
            return Err(DropReason::Replay);
        }
        self.hellos_received += 1;
        if self.theirs != Some(nonce) {
            self.theirs = Some(nonce);
            self.candidate = None;
        }
        self.theirs_ts = h.timestamp;
        let echoes_mine = h.echo == Some(self.mine.0);
        let running = self
            .current
            .as_ref()
            .is_some_and(|c| c.theirs == nonce && c.mine == self.mine);
        if running {
            // The peer's Hello of the epoch we run: it waits for our confirmation unless
            // it says it has agreed too.
            self.hello_due |= !h.confirmed || !echoes_mine;
        } else if echoes_mine && !self.mine_used {
            self.agree(nonce, now);
            self.hello_due |= !h.confirmed;
        } else {
            // The peer does not know our nonce yet, or it brings a new one of its own
            // while ours is spent: answer, with a new nonce in the second case.
            self.need_nonce |= self.mine_used;
            self.hello_due = true;
        }
        self.prepare_candidate();
        Ok(())
    }

    /// Derives the candidate inbound SA of (mine, theirs) when `mine` is not spent.
    fn prepare_candidate(&mut self) {
        let Some(theirs) = self.theirs else {
            return;
        };
        if self.mine_used || self.candidate.as_ref().is_some_and(|(n, _)| *n == theirs) {
            return;
        }
        let sas = self.secrets.epoch_sas(&self.mine, &theirs);
        self.candidate = Inbound::new(self.cipher, &sas.inbound)
            .ok()
            .map(|i| (theirs, i));
    }

    /// Switches to the epoch (mine, theirs): sends under it from now on, keeps the
    /// previous inbound SA for a while, spends `mine`.
    fn agree(&mut self, theirs: Nonce, now: Instant) {
        let sas = self.secrets.epoch_sas(&self.mine, &theirs);
        let inb = match self.candidate.take() {
            Some((n, inb)) if n == theirs => Ok(inb),
            _ => Inbound::new(self.cipher, &sas.inbound),
        };
        let out = Outbound::new(self.cipher, &sas.outbound, 1, REJECT_AFTER_PACKETS + 1);
        // Only a wrong key length fails, which the KDF never gives.
        let (Ok(inb), Ok(out)) = (inb, out) else {
            return;
        };
        if let Some(old) = self.current.take() {
            // An SPI that repeats across epochs (a 2^-32 chance) ends the grace at once.
            if old.inb.spi() != inb.spi() {
                self.previous = Some((old.inb, now + PREVIOUS_GRACE));
            }
            self.retired[self.next_retired % RETIRED] = Some(old.theirs);
            self.next_retired = self.next_retired.wrapping_add(1);
        }
        self.current = Some(Epoch {
            mine: self.mine,
            theirs,
            out,
            inb,
            agreed_at: now,
        });
        self.mine_used = true;
        self.retransmit_at = None;
        self.agreed += 1;
    }

    pub(super) fn wants_hello(&self) -> bool {
        self.hello_due || self.need_nonce
    }

    pub(super) fn poll_hello(
        &mut self,
        now: Instant,
        fresh: impl FnOnce() -> Option<[u8; NONCE_LEN]>,
        buf: &mut [u8],
    ) -> Option<usize> {
        if let Some(c) = &self.current {
            let used = c.out.next.saturating_sub(1);
            if self.mine_used
                && (now.saturating_duration_since(c.agreed_at) >= self.rekey_after
                    || used >= REKEY_AFTER_PACKETS)
            {
                self.need_nonce = true;
            }
        }
        if self.need_nonce && now.saturating_duration_since(self.last_pick) >= NEW_NONCE_GAP {
            if let Some(r) = fresh().filter(|r| *r != [0u8; NONCE_LEN] && *r != self.mine.0) {
                self.mine = Nonce(r);
                self.mine_used = false;
                self.need_nonce = false;
                self.last_pick = now;
                self.candidate = None;
                self.prepare_candidate();
                self.hello_due = true;
                self.retransmit_at = None;
                self.backoff = FIRST_RETRANSMIT;
            }
        }
        // A Hello with a spent nonce would only make the peer agree on an epoch this
        // end will not: wait for the new nonce.
        if self.need_nonce {
            return None;
        }
        let timer = !self.mine_used && self.retransmit_at.is_none_or(|t| now >= t);
        if !(self.hello_due || timer) || !self.hellos.allow(now) {
            return None;
        }
        let buf = buf.get_mut(..HELLO_LEN)?;
        let ms = u64::try_from(now.saturating_duration_since(self.born).as_millis()).ok()?;
        let timestamp = ms.max(self.last_ts + 1);
        let confirmed = self
            .current
            .as_ref()
            .is_some_and(|c| c.mine == self.mine && Some(c.theirs) == self.theirs);
        let repr = hello::Repr {
            confirmed,
            timestamp,
            nonce: self.mine.0,
            echo: self.theirs.map(|n| n.0),
        };
        let mut p = hello::Packet::new_unchecked(&mut *buf);
        repr.emit(&mut p).ok()?;
        let (covered, mac) = p.authenticated_and_mac_mut();
        self.secrets.sign(covered, mac);
        self.last_ts = timestamp;
        self.hello_due = false;
        self.hellos_sent += 1;
        if timer {
            self.retransmit_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_RETRANSMIT);
        }
        Some(HELLO_LEN)
    }

    pub(super) fn status(&self, now: Instant) -> EspStatus {
        let c = self.current.as_ref();
        let sent = c.map(|c| c.out.next.saturating_sub(1));
        EspStatus {
            keying: Keying::Epoch,
            spi_out: c.map(|c| c.out.sa.spi()),
            spi_in: c.map(|c| c.inb.spi()),
            next_seq: c.map_or(1, |c| c.out.next),
            reserved_to: None,
            highest_received: c.map_or(0, |c| c.inb.window.top()),
            epoch: Some(EpochStatus {
                epochs: self.agreed,
                since_agreed: c.map(|c| now.saturating_duration_since(c.agreed_at)),
                packets_to_rekey: sent.map(|s| REKEY_AFTER_PACKETS.saturating_sub(s)),
                time_to_rekey: c
                    .map(|c| (c.agreed_at + self.rekey_after).saturating_duration_since(now)),
                rekey_after: self.rekey_after,
                rekeying: c.is_some() && !self.mine_used,
                hellos_sent: self.hellos_sent,
                hellos_received: self.hellos_received,
            }),
        }
    }

    #[cfg(test)]
    pub(super) fn set_next_seq(&mut self, next: u64) {
        if let Some(c) = self.current.as_mut() {
            c.out.next = next;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod test {
    use std::collections::HashSet;
    use std::net::IpAddr;

    use super::*;
    use crate::tunnel::esp::test::{open, open_at, send};
    use crate::tunnel::esp::EspCore;
    use crate::wire::esp::Packet;

    const TICK: Duration = Duration::from_millis(50);
    const A: &str = "203.0.113.10";
    const B: &str = "198.51.100.20";

    /// One end: its core and where its fresh nonces come from.
    struct End {
        core: EspCore,
        rng: u8,
    }

    impl End {
        fn new(local: &str, peer: &str, rng: u8, rekey: Duration, now: Instant) -> End {
            let params = EpochParams {
                cipher: Cipher::ChaCha20Poly1305,
                enc_key: b"enc",
                auth_key: b"auth",
                local: local.parse::<IpAddr>().unwrap(),
                peer: peer.parse::<IpAddr>().unwrap(),
                rekey_after: rekey,
            };
            End {
                core: EspCore::with_epochs(params, [rng; 32], now).unwrap(),
                rng: rng.wrapping_add(1),
            }
        }

        fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
            let mut buf = [0u8; 200];
            let rng = &mut self.rng;
            let n = self.core.poll_hello(
                now,
                || {
                    let r = *rng;
                    *rng = rng.wrapping_add(1);
                    Some([r; 32])
                },
                &mut buf,
            )?;
            Some(buf[..n].to_vec())
        }

        fn take(&mut self, packet: &[u8], now: Instant) -> Result<(), DropReason> {
            let mut p = packet.to_vec();
            match self.core.decapsulate(&mut p, now)? {
                Decap::Hello => Ok(()),
                Decap::Packet { .. } => panic!("data where a Hello was expected"),
            }
        }

        fn status(&self, now: Instant) -> EspStatus {
            self.core.status(now)
        }

        fn epochs(&self, now: Instant) -> u64 {
            self.status(now).epoch.unwrap().epochs
        }
    }

    /// Two ends and a fake clock; every Hello ever sent is kept, by sender.
    struct Pair {
        a: End,
        b: End,
        now: Instant,
        sent_by_a: Vec<Vec<u8>>,
        sent_by_b: Vec<Vec<u8>>,
    }

    impl Pair {
        fn new(rekey: Duration) -> Pair {
            let now = Instant::now();
            Pair {
                a: End::new(A, B, 0x10, rekey, now),
                b: End::new(B, A, 0x80, rekey, now),
                now,
                sent_by_a: Vec::new(),
                sent_by_b: Vec::new(),
            }
        }

        /// One tick: both ends poll, and what they send arrives at once.
        fn step(&mut self) -> usize {
            self.now += TICK;
            let mut sent = 0;
            while let Some(h) = self.a.poll(self.now) {
                let _ = self.b.take(&h, self.now);
                self.sent_by_a.push(h);
                sent += 1;
            }
            while let Some(h) = self.b.poll(self.now) {
                let _ = self.a.take(&h, self.now);
                self.sent_by_b.push(h);
                sent += 1;
            }
            sent
        }

        /// Steps until both ends run the same epoch and nothing is sent any more.
        fn settle(&mut self) {
            for _ in 0..200 {
                let sent = self.step();
                let (sa, sb) = (self.a.status(self.now), self.b.status(self.now));
                if sent == 0
                    && sa.spi_out.is_some()
                    && sa.spi_out == sb.spi_in
                    && sa.spi_in == sb.spi_out
                {
                    return;
                }
            }
            panic!("no agreement: {:?} {:?}", self.a.core, self.b.core);
        }

        fn spis(&self) -> (Option<u32>, Option<u32>) {
            let s = self.a.status(self.now);
            (s.spi_out, s.spi_in)
        }

        /// A data packet each way arrives and opens.
        fn carries(&mut self) {
            let p = send(&mut self.a.core, b"a to b");
            assert_eq!(open(&mut self.b.core, &mut p.clone()).unwrap().1, b"a to b");
            let p = send(&mut self.b.core, b"b to a");
            assert_eq!(open(&mut self.a.core, &mut p.clone()).unwrap().1, b"b to a");
        }
    }

    fn seal(core: &mut EspCore) -> Result<Vec<u8>, DropReason> {
        let mut buf = vec![0u8; 64];
        buf[super::super::PREFIX_LEN..super::super::PREFIX_LEN + 4].copy_from_slice(b"data");
        let n = core.encapsulate(&mut buf, 4, 47)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn spi_seq(p: &[u8]) -> (u32, u32) {
        let p = Packet::new_checked(p).unwrap();
        (p.spi(), p.seq_low())
    }

    #[test]
    fn nothing_is_sent_before_the_peer_agreed_then_both_ends_run_one_epoch() {
        let mut n = Pair::new(DEFAULT_REKEY_AFTER);
        assert_eq!(seal(&mut n.a.core).unwrap_err(), DropReason::NoSession);
        let s = n.a.status(n.now);
        assert_eq!(
            (s.spi_out, s.spi_in, s.epoch.unwrap().epochs),
            (None, None, 0)
        );
        n.settle();
        assert_eq!((n.a.epochs(n.now), n.b.epochs(n.now)), (1, 1));
        let p = seal(&mut n.a.core).unwrap();
        assert_eq!(spi_seq(&p).1, 1, "sequence numbers start at 1 in an epoch");
        n.carries();
        let s = n.a.status(n.now);
        assert_eq!(s.keying, Keying::Epoch);
        assert_eq!(s.reserved_to, None);
        let e = s.epoch.unwrap();
        assert_eq!(e.packets_to_rekey, Some(REKEY_AFTER_PACKETS - 2));
        assert!(!e.rekeying);
        // The two directions never share an SPI, and neither is the Hello's.
        let (out, inb) = n.spis();
        assert_ne!(out, inb);
        assert!(out.unwrap() >= 0x100 && inb.unwrap() >= 0x100);
    }

    /// A's first Hello to B, B's answer to A: A has agreed, B not yet.
    fn two_hellos(n: &mut Pair) {
        let now = n.now;
        let h1 = n.a.poll(now).unwrap();
        n.b.take(&h1, now).unwrap();
        let h2 = n.b.poll(now).unwrap();
        n.a.take(&h2, now).unwrap();
        assert_eq!(n.a.epochs(now), 1, "A agrees on B's answer");
        assert_eq!(n.b.epochs(now), 0);
    }

    #[test]
    fn three_hellos_agree_when_one_end_starts_first() {
        let mut n = Pair::new(DEFAULT_REKEY_AFTER);
        let now = n.now;
        two_hellos(&mut n);
        let h3 = n.a.poll(now).unwrap();
        n.b.take(&h3, now).unwrap();
        assert_eq!(n.b.epochs(now), 1, "B agrees on A's confirmation");
        assert!(n.a.poll(now).is_none() && n.b.poll(now).is_none());
        n.carries();
    }

    #[test]
    fn the_first_data_packet_agrees_when_the_confirmation_is_lost() {
        let mut n = Pair::new(DEFAULT_REKEY_AFTER);
        let now = n.now;
        two_hellos(&mut n);
        let _lost = n.a.poll(now).unwrap();
        let p = send(&mut n.a.core, b"first");
        assert_eq!(open(&mut n.b.core, &mut p.clone()).unwrap().1, b"first");
        assert_eq!(n.b.epochs(now), 1);
        n.carries();
    }

    #[test]
    fn hellos_are_sent_again_after_1_2_4_and_8_s_until_answered() {
        let mut a = End::new(A, B, 1, DEFAULT_REKEY_AFTER, Instant::now());
        let start = Instant::now();
        let mut at = Vec::new();
        for i in 0..=600 {
            let now = start + TICK * i;
            if a.poll(now).is_some() {
                at.push((now - start).as_millis() / 50 * 50);
            }
        }
        assert_eq!(at, [0, 1000, 3000, 7000, 15000, 23000]);
    }

    #[test]
    fn a_rekey_moves_both_ends_to_new_spis_and_loses_no_packet_in_flight() {
        let rekey = Duration::from_secs(10);
        let mut n = Pair::new(rekey);
        n.settle();
        let first = n.spis();
        let a_seq = seal(&mut n.a.core).unwrap();
        assert_eq!(spi_seq(&a_seq).1, 1);
        // In flight across the switch: sealed under epoch 1, delivered under epoch 2.
        let late_from_b = send(&mut n.b.core, b"late");
        let later_from_b = send(&mut n.b.core, b"later");
        n.now += rekey;
        n.settle();
        let second = n.spis();
        assert_ne!(first.0, second.0);
        assert_ne!(first.1, second.1);
        assert_eq!((n.a.epochs(n.now), n.b.epochs(n.now)), (2, 2));
        assert_eq!(spi_seq(&seal(&mut n.a.core).unwrap()).1, 1, "from 1 again");
        assert_eq!(
            open_at(&mut n.a.core, &mut late_from_b.clone(), n.now)
                .unwrap()
                .1,
            b"late"
        );
        n.carries();
        // After the grace, epoch 1's SA is gone.
        n.now += PREVIOUS_GRACE;
        assert_eq!(
            open_at(&mut n.a.core, &mut later_from_b.clone(), n.now).unwrap_err(),
            DropReason::UnknownSpi
        );
        let e = n.a.status(n.now).epoch.unwrap();
        assert!(e.time_to_rekey.unwrap() < rekey);
    }

    #[test]
    fn the_lower_address_starts_time_rekeys_and_packets_start_them_too() {
        let rekey = Duration::from_secs(80);
        let mut n = Pair::new(rekey);
        n.settle();
        // B (198.51.100.20) is the lower address: its timer runs 80 s, A's 90 s.
        assert_eq!(n.b.status(n.now).epoch.unwrap().rekey_after, rekey);
        assert_eq!(
            n.a.status(n.now).epoch.unwrap().rekey_after,
            Duration::from_secs(90)
        );
        n.now += rekey;
        assert!(n.a.poll(n.now).is_none(), "A's timer has 10 s to go");
        n.settle();
        assert_eq!(n.b.epochs(n.now), 2);
        // 2^31 packets sent: A starts a rekey at once.
        if let super::super::Keys::Epoch(e) = &mut n.a.core.keys {
            e.set_next_seq(REKEY_AFTER_PACKETS + 1);
        }
        assert_eq!(n.a.status(n.now).epoch.unwrap().packets_to_rekey, Some(0));
        n.now += NEW_NONCE_GAP;
        n.settle();
        assert_eq!(n.a.epochs(n.now), 3);
        // Past 2^32, nothing more is sent under one key.
        if let super::super::Keys::Epoch(e) = &mut n.a.core.keys {
            e.set_next_seq(REJECT_AFTER_PACKETS + 1);
        }
        assert_eq!(seal(&mut n.a.core).unwrap_err(), DropReason::NoSession);
    }

    #[test]
    fn simultaneous_rekeys_converge_on_one_epoch() {
        let rekey = Duration::from_secs(10);
        let mut n = Pair::new(rekey);
        n.settle();
        // Both timers expired: both draw a new nonce in the same tick.
        n.now += Duration::from_secs(12);
        n.settle();
        assert_eq!(n.a.status(n.now).spi_out, n.b.status(n.now).spi_in);
        n.carries();
    }

    #[test]
    fn replayed_old_hellos_neither_break_nor_move_a_running_session() {
        let rekey = Duration::from_secs(10);
        let mut n = Pair::new(rekey);
        n.settle();
        let epoch1: Vec<Vec<u8>> = n.sent_by_a.clone();
        let epoch1_b: Vec<Vec<u8>> = n.sent_by_b.clone();
        n.now += rekey + rekey;
        n.settle();
        let running = n.spis();
        let epochs = n.a.epochs(n.now);
        // Epoch 1's Hellos, and the current epoch's, replayed to both ends.
        let current_a: Vec<Vec<u8>> = n.sent_by_a[epoch1.len()..].to_vec();
        for h in epoch1.iter().chain(current_a.iter()) {
            assert_eq!(n.b.take(h, n.now).unwrap_err(), DropReason::Replay);
        }
        for h in &epoch1_b {
            assert_eq!(n.a.take(h, n.now).unwrap_err(), DropReason::Replay);
        }
        assert!(!n.a.core.wants_hello() && !n.b.core.wants_hello());
        assert_eq!(n.step(), 0, "no answer to a replay");
        assert_eq!((n.spis(), n.a.epochs(n.now)), (running, epochs));
        n.carries();
    }

    #[test]
    fn forged_reflected_and_cut_hellos_are_refused() {
        let mut n = Pair::new(DEFAULT_REKEY_AFTER);
        let h = n.a.poll(n.now).unwrap();
        let mut forged = h.clone();
        forged[20] ^= 1;
        assert_eq!(n.b.take(&forged, n.now).unwrap_err(), DropReason::BadAuth);
        // A's own Hello sent back to it: the MAC key is per direction.
        assert_eq!(n.a.take(&h, n.now).unwrap_err(), DropReason::BadAuth);
        assert_eq!(
            n.b.take(&h[..100], n.now).unwrap_err(),
            DropReason::Truncated
        );
        let mut v2 = h.clone();
        v2[4] = 2;
        assert_eq!(n.b.take(&v2, n.now).unwrap_err(), DropReason::Malformed);
        // Other static keys: nothing opens.
        let mut other = End::new(A, B, 7, DEFAULT_REKEY_AFTER, n.now);
        if let super::super::Keys::Epoch(e) = &mut other.core.keys {
            e.secrets = EpochSecrets::new(
                Cipher::ChaCha20Poly1305,
                b"enc",
                b"other",
                A.parse().unwrap(),
                B.parse().unwrap(),
            )
            .unwrap();
        }
        let o = other.poll(n.now).unwrap();
        assert_eq!(n.b.take(&o, n.now).unwrap_err(), DropReason::BadAuth);
        n.b.take(&h, n.now).unwrap();
    }

    #[test]
    fn a_restarted_end_agrees_anew_and_old_data_never_opens_in_the_new_epoch() {
        let mut n = Pair::new(DEFAULT_REKEY_AFTER);
        n.settle();
        let old_data: Vec<Vec<u8>> = (0..5).map(|_| send(&mut n.a.core, b"old")).collect();
        for p in &old_data {
            open(&mut n.b.core, &mut p.clone()).unwrap();
        }
        let old_hellos_a = n.sent_by_a.clone();
        // B restarts with nothing but the static keys: a fresh core, a fresh nonce.
        n.b = End::new(B, A, 0xc0, DEFAULT_REKEY_AFTER, n.now);
        // Before agreeing, the old data and A's old Hellos arrive again.
        for p in &old_data {
            assert_eq!(
                open(&mut n.b.core, &mut p.clone()).unwrap_err(),
                DropReason::UnknownSpi
            );
        }
        for h in &old_hellos_a {
            let _ = n.b.take(h, n.now);
        }
        n.now += NEW_NONCE_GAP;
        n.settle();
        assert_eq!(n.b.epochs(n.now), 1);
        assert_eq!(n.a.epochs(n.now), 2, "A moved on without dropping anything");
        for p in &old_data {
            assert!(open(&mut n.b.core, &mut p.clone()).is_err());
        }
        n.carries();
    }

    /// Restarts of either end, rekeys and replays, and the property the epochs exist
    /// for: no (SPI, sequence number) is ever sent twice, hence no (key, nonce) pair.
    #[test]
    fn no_spi_and_sequence_number_repeats_across_restarts_and_rekeys() {
        let rekey = Duration::from_secs(5);
        let mut n = Pair::new(rekey);
        let mut seen = HashSet::new();
        let mut rng = 0x20u8;
        for round in 0..12 {
            n.settle();
            for _ in 0..3 {
                for core in [&mut n.a.core, &mut n.b.core] {
                    let p = seal(core).unwrap();
                    assert!(
                        seen.insert(spi_seq(&p)),
                        "round {round}: {:?} again",
                        spi_seq(&p)
                    );
                }
            }
            rng = rng.wrapping_add(0x11);
            match round % 3 {
                0 => n.a = End::new(A, B, rng, rekey, n.now),
                1 => n.b = End::new(B, A, rng, rekey, n.now),
                _ => n.now += rekey + rekey,
            }
            n.now += NEW_NONCE_GAP;
        }
    }

    #[test]
    fn status_and_debug_show_no_keys() {
        let mut n = Pair::new(DEFAULT_REKEY_AFTER);
        n.settle();
        let text = format!("{:?} {:?}", n.a.core, n.a.status(n.now));
        if let super::super::Keys::Epoch(e) = &n.a.core.keys {
            let c = e.current.as_ref().unwrap();
            let sas = e.secrets.epoch_sas(&c.mine, &c.theirs);
            let hex: String = sas.outbound.key[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert!(!text.contains(&hex), "{text}");
        }
    }
}
