//! Hit references: random, unguessable handles on a hit, bound to the country they were
//! issued to and expiring. They carry nothing about the record; only the issuing node
//! can resolve one, and only for that country before the expiry.

use std::{fmt, str::FromStr};

use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::{
    domain::identity::RecordId,
    domain::principals::Country,
    domain::pseudonymise::Quality,
    domain::reason::Reason,
    store::{Batch, Store, StoreError, Table},
};

/// Bytes of randomness in a hit reference (128 bits).
pub const RANDOM_BYTES: usize = 16;
/// Bytes of a hit reference: the issue time (seconds, big-endian u32) then
/// [`RANDOM_BYTES`] random bytes. The time prefix keeps the store's inserts in key
/// order (fast) and lets expired references be pruned by range; the random part
/// makes a reference unguessable.
pub const HIT_REF_BYTES: usize = 4 + RANDOM_BYTES;

/// A hit reference: 40 lower-case hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HitRef([u8; HIT_REF_BYTES]);

impl fmt::Display for HitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for HitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HitRef({self})")
    }
}

// Stored as its text.
impl Serialize for HitRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HitRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for HitRef {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<HitRef, &'static str> {
        const BAD: &str = "a hit reference is 40 lower-case hexadecimal digits";
        // One spelling only: `from_str_radix` alone would take `+f` and upper case.
        if s.len() != HIT_REF_BYTES * 2
            || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(BAD);
        }
        let mut bytes = [0u8; HIT_REF_BYTES];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or(BAD)?, 16).map_err(|_| BAD)?;
        }
        Ok(HitRef(bytes))
    }
}

/// What the issuing node remembers about a hit reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedHit {
    /// The record that matched.
    pub record: RecordId,
    /// The country the reference was issued to.
    pub country: Country,
    /// Seconds since the Unix epoch after which it no longer resolves.
    pub expires_at: i64,
    /// The hit's quality (stored by its name).
    #[serde(with = "quality_name")]
    pub quality: Quality,
    /// The Match request that produced it (the requesting node's search).
    pub request_id: String,
    /// The reason of that Match, which a follow-up of this hit must carry. None for
    /// a reference issued before references kept it.
    pub reason: Option<Reason>,
}

/// A hit reference as stored before it kept its Match's reason.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct IssuedHitV1 {
    record: RecordId,
    country: Country,
    expires_at: i64,
    #[serde(with = "quality_name")]
    quality: Quality,
    request_id: String,
}

/// Reads a stored hit reference, of either format.
fn decode(bytes: &[u8]) -> Result<IssuedHit, StoreError> {
    postcard::from_bytes::<IssuedHit>(bytes)
        .or_else(|_| {
            postcard::from_bytes::<IssuedHitV1>(bytes).map(|v| IssuedHit {
                record: v.record,
                country: v.country,
                expires_at: v.expires_at,
                quality: v.quality,
                request_id: v.request_id,
                reason: None,
            })
        })
        .map_err(|_| StoreError::Corrupt { key: "hit_refs" })
}

/// Why a hit reference does not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HitRefError {
    /// No such reference was issued (or its record was erased).
    #[error("unknown hit reference")]
    Unknown,
    /// The reference has expired.
    #[error("the hit reference has expired")]
    Expired,
    /// The reference was issued to another country.
    #[error("the hit reference was not issued to this country")]
    OtherCountry,
}

/// A quality stored by its name, as earlier versions wrote it.
mod quality_name {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use crate::domain::pseudonymise::Quality;

    pub fn serialize<S: Serializer>(q: &Quality, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(q.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Quality, D::Error> {
        let name = String::deserialize(d)?;
        Quality::from_name(&name).ok_or_else(|| serde::de::Error::custom("unknown quality"))
    }
}

/// Stores new hit references in one atomic batch and returns them in order. The batch
/// is relaxed (see [`Batch::relaxed`]): Match answers do not wait for the disk.
pub fn issue(
    store: &dyn Store,
    hits: &[(RecordId, Quality)],
    country: Country,
    now: i64,
    expires_at: i64,
    request_id: &str,
    reason: &Reason,
) -> Result<Vec<HitRef>, StoreError> {
    // One draw from the system generator for the whole batch.
    let mut random = vec![0u8; hits.len() * RANDOM_BYTES];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| StoreError::Engine("the system random generator failed".into()))?;
    let mut batch = Batch::relaxed();
    let mut refs = Vec::with_capacity(hits.len());
    let issued_at = (now.clamp(0, i64::from(u32::MAX)) as u32).to_be_bytes();
    for ((record, quality), bytes) in hits.iter().zip(random.chunks_exact(RANDOM_BYTES)) {
        let mut r = [0u8; HIT_REF_BYTES];
        r[..4].copy_from_slice(&issued_at);
        r[4..].copy_from_slice(bytes);
        let issued = IssuedHit {
            record: record.clone(),
            country,
            expires_at,
            quality: *quality,
            request_id: request_id.to_owned(),
            reason: Some(reason.clone()),
        };
        batch.put(
            Table::HitRefs,
            r.to_vec(),
            postcard::to_allocvec(&issued).unwrap_or_default(),
        );
        refs.push(HitRef(r));
    }
    if !batch.is_empty() {
        store.apply(&batch)?;
    }
    Ok(refs)
}

/// Resolves a hit reference for `country` at time `now` (seconds since the epoch).
pub fn resolve(
    store: &dyn Store,
    hit: &HitRef,
    country: Country,
    now: i64,
) -> Result<Result<IssuedHit, HitRefError>, StoreError> {
    let Some(bytes) = store.get(Table::HitRefs, &hit.0)? else {
        return Ok(Err(HitRefError::Unknown));
    };
    let issued = decode(&bytes)?;
    if issued.country != country {
        return Ok(Err(HitRefError::OtherCountry));
    }
    if now >= issued.expires_at {
        return Ok(Err(HitRefError::Expired));
    }
    Ok(Ok(issued))
}

/// Deletes the hit references that have expired by `now`, among those issued at
/// least `ttl_seconds` ago (the current validity; older ones issued under a longer one
/// stay until they expire). Returns how many were deleted.
pub fn prune(store: &dyn Store, now: i64, ttl_seconds: i64) -> Result<usize, StoreError> {
    let issued_before = (now - ttl_seconds).clamp(0, i64::from(u32::MAX)) as u32;
    let mut pruned = 0;
    let mut batch = Batch::relaxed();
    for entry in store.scan_range(Table::HitRefs, &[], Some(&issued_before.to_be_bytes())) {
        let entry = entry?;
        let expired = decode(&entry.value).map_or(true, |issued| issued.expires_at <= now);
        if expired {
            batch.delete(Table::HitRefs, entry.key);
            pruned += 1;
        }
        if batch.ops().len() >= 10_000 {
            store.apply(&std::mem::replace(&mut batch, Batch::relaxed()))?;
        }
    }
    if !batch.is_empty() {
        store.apply(&batch)?;
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::reason::{Aim, PersonCategory};

    fn reason() -> Reason {
        Reason {
            case_reference: "FR-2026-1".into(),
            offence_category: "0301 00".into(),
            person_category: PersonCategory::Suspect,
            aim: Aim::Identify,
        }
    }

    #[test]
    fn a_reference_keeps_its_reason_and_one_stored_before_reads_without() {
        let store = crate::store::memory::MemoryStore::new();
        let fr: Country = "FR".parse().expect("country");
        let record = RecordId::try_from("de-1").expect("id");
        let new = issue(
            &store,
            &[(record.clone(), Quality::Exact)],
            fr,
            10,
            100,
            "s-1",
            &reason(),
        )
        .expect("issued")[0];
        let resolved = resolve(&store, &new, fr, 11)
            .expect("store")
            .expect("resolves");
        assert_eq!(
            (resolved.request_id.as_str(), resolved.reason),
            ("s-1", Some(reason()))
        );
        let old = IssuedHitV1 {
            record,
            country: fr,
            expires_at: 100,
            quality: Quality::Strong,
            request_id: "s-0".into(),
        };
        let key = [7u8; HIT_REF_BYTES];
        let mut batch = Batch::new();
        batch.put(
            Table::HitRefs,
            key.to_vec(),
            postcard::to_allocvec(&old).expect("encode"),
        );
        store.apply(&batch).expect("store");
        let resolved = resolve(&store, &HitRef(key), fr, 11)
            .expect("store")
            .expect("resolves");
        assert_eq!((resolved.quality, resolved.reason), (Quality::Strong, None));
    }

    #[test]
    fn issued_references_start_with_the_issue_time_are_random_and_round_trip() {
        let store = crate::store::memory::MemoryStore::new();
        let record = RecordId::try_from("de-1").expect("id");
        let fr: Country = "FR".parse().expect("country");
        let issued = issue(
            &store,
            &[(record.clone(), Quality::Exact), (record, Quality::Weak)],
            fr,
            1_800_000_000,
            1_800_003_600,
            "search-1",
            &reason(),
        )
        .expect("issued");
        let (a, b) = (issued[0], issued[1]);
        assert!(
            a.to_string()
                .starts_with(&format!("{:08x}", 1_800_000_000u32))
        );
        assert_ne!(a, b, "128 random bits each");
        let resolved = resolve(&store, &b, fr, 1_800_000_001)
            .expect("store")
            .expect("resolves for FR");
        assert_eq!(resolved.quality, Quality::Weak);
        assert_eq!(a.to_string().parse::<HitRef>(), Ok(a));
        assert!("xyz".parse::<HitRef>().is_err());
        assert!(a.to_string().to_uppercase().parse::<HitRef>().is_err());
        assert!(
            format!("+{}", &a.to_string()[1..])
                .parse::<HitRef>()
                .is_err()
        );
        assert!("zz".repeat(20).parse::<HitRef>().is_err());
    }

    #[test]
    fn expired_references_are_pruned_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let fr: Country = "FR".parse().expect("country");
        let opened =
            crate::store::open(dir.path(), fr, &crate::secret::DataKey::from_bytes([1; 32]))
                .expect("store");
        let store = opened.store.as_ref();
        let record = RecordId::try_from("r-1").expect("id");
        let hit = [(record, Quality::Strong)];
        // Issued at 1000: one valid for 100 s, one for 10,000 s.
        let short = issue(store, &hit, fr, 1000, 1100, "q1", &reason()).expect("issue");
        let long = issue(store, &hit, fr, 1000, 11_000, "q2", &reason()).expect("issue");
        assert_eq!(
            prune(store, 1050, 100).expect("prune"),
            0,
            "nothing expired yet"
        );
        assert_eq!(prune(store, 2000, 100).expect("prune"), 1);
        assert_eq!(
            resolve(store, &short[0], fr, 500).expect("resolve"),
            Err(HitRefError::Unknown)
        );
        assert!(resolve(store, &long[0], fr, 2000).expect("resolve").is_ok());
        assert_eq!(prune(store, 20_000, 100).expect("prune"), 1);
    }
}
