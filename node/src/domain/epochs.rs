//! Key epochs and their rotation on this node (DESIGN section 5): which match index
//! answers a Match of a given epoch, which epoch this node evaluates under, and the
//! steps of a rotation to the node's next key. No other node takes part: each node
//! keys its own index and rotates on its own schedule.
//!
//! A rotation has three phases on a node:
//!
//! * **stable**: one index, for the active epoch; earlier epochs are retired.
//! * **building**: the index for the next epoch is being built from the stored
//!   records in the background; the active one evaluates and answers as before.
//! * **grace**: the next epoch has become active (peers' evaluations are made under
//!   it); the previous one still answers a Match for a short, configured grace, so
//!   that a search evaluated just before the switch loses no hit. Then it is retired.
//!
//! A retired epoch's Match is refused with an error that names the epoch served.
//! Imports and erasures are refused while a rotation is under way (they would change
//! one index and not the other).

use std::sync::{Arc, PoisonError, RwLock};

use crate::{
    domain::index::NationalIndex,
    domain::pseudonymise::{KeyEpoch, oprf::NodeKey},
    store::{Batch, Store, StoreError, Table},
};

/// Where a node's rotation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochStatus {
    /// The epoch this node evaluates under.
    pub active: KeyEpoch,
    /// The epoch being built, if any.
    pub building: Option<KeyEpoch>,
    /// The previous epoch still answering a Match, and until when (seconds since the
    /// Unix epoch).
    pub previous: Option<(KeyEpoch, i64)>,
    /// Epochs this node refuses.
    pub retired: Vec<u32>,
}

impl EpochStatus {
    /// `stable`, `building` or `grace`.
    pub fn phase(&self) -> &'static str {
        match (self.building, self.previous) {
            (Some(_), _) => "building",
            (None, Some(_)) => "grace",
            (None, None) => "stable",
        }
    }

    /// Whether a rotation is under way (building, or the previous epoch in grace).
    pub fn rotating(&self) -> bool {
        self.phase() != "stable"
    }
}

/// Why a Match under an epoch is refused. The messages name the field and the epochs
/// served, nothing of the call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EpochRefusal {
    /// The epoch was retired by a rotation.
    #[error(
        "field `key_epoch`: epoch {epoch} was retired on this node; it answers under epoch {active}: evaluate again"
    )]
    Retired {
        /// The epoch asked for.
        epoch: u32,
        /// The epoch served.
        active: KeyEpoch,
    },
    /// The epoch is being built.
    #[error(
        "field `key_epoch`: epoch {epoch} is still being built on this node; it answers under epoch {active} until then"
    )]
    Building {
        /// The epoch asked for.
        epoch: u32,
        /// The epoch served.
        active: KeyEpoch,
    },
    /// Never an epoch of this node.
    #[error(
        "field `key_epoch`: epoch {epoch} is not served by this node; it answers under epoch {serving}"
    )]
    Unknown {
        /// The epoch asked for.
        epoch: u32,
        /// The epochs served, as text.
        serving: String,
    },
}

/// Why a rotation step was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// A rotation is already under way.
    #[error("a rotation to epoch {0} is already under way; see `adep keys rotate --status`")]
    UnderWay(KeyEpoch),
    /// The last rotation's previous epoch still answers in its grace.
    #[error(
        "epoch {0} still answers in its grace after the last rotation; a new rotation can start once it is retired (`adep keys rotate --status` tells when)"
    )]
    InGrace(KeyEpoch),
    /// The key seed cannot be read.
    #[error(transparent)]
    Seed(#[from] crate::secret::SecretError),
    /// The rotation's task failed.
    #[error("the rotation task failed")]
    Task,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
struct Epochs {
    active: Arc<NationalIndex>,
    previous: Option<(Arc<NationalIndex>, i64)>,
    building: Option<KeyEpoch>,
    retired: Vec<u32>,
}

/// The indexes a node serves, by epoch.
#[derive(Debug)]
pub struct Indexes {
    epochs: RwLock<Epochs>,
}

const META_ACTIVE: &[u8] = b"key_epoch";
/// Written by scheme v1 for a rotation in transition; removed on the first write.
const META_NEXT_V1: &[u8] = b"next_key_epoch";
const META_RETIRED: &[u8] = b"retired_key_epochs";

/// The epochs as stored: which one is active, and which were retired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredEpochs {
    /// The active epoch, once the node has started.
    pub active: Option<u32>,
    /// Retired epochs.
    pub retired: Vec<u32>,
}

impl StoredEpochs {
    /// Reads the stored epochs.
    pub fn read(store: &dyn Store) -> Result<StoredEpochs, StoreError> {
        let u32_of = |v: Vec<u8>| {
            v.try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt { key: "key_epoch" })
        };
        let active = store
            .get(Table::Meta, META_ACTIVE)?
            .map(u32_of)
            .transpose()?;
        let retired = store
            .get(Table::Meta, META_RETIRED)?
            .map(|v| {
                v.chunks(4)
                    .map(|c| u32_of(c.to_vec()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(StoredEpochs { active, retired })
    }

    /// Writes the epochs (durably).
    pub fn write(&self, store: &dyn Store) -> Result<(), StoreError> {
        store.apply(&self.batch())
    }

    /// The writes that store these epochs.
    pub fn batch(&self) -> Batch {
        let mut batch = Batch::new();
        match self.active {
            Some(a) => batch.put(Table::Meta, META_ACTIVE, a.to_be_bytes()),
            None => batch.delete(Table::Meta, META_ACTIVE),
        }
        batch.delete(Table::Meta, META_NEXT_V1);
        let retired: Vec<u8> = self.retired.iter().flat_map(|e| e.to_be_bytes()).collect();
        batch.put(Table::Meta, META_RETIRED, retired);
        batch
    }
}

impl Indexes {
    /// The indexes of a started node: the active one, and the retired epochs.
    pub fn new(active: Arc<NationalIndex>, retired: Vec<u32>) -> Indexes {
        Indexes {
            epochs: RwLock::new(Epochs {
                active,
                previous: None,
                building: None,
                retired,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Epochs> {
        self.epochs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Epochs> {
        self.epochs.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The active index: peers' evaluations use its key, imports write through it,
    /// and the records are read from its store.
    pub fn active(&self) -> Arc<NationalIndex> {
        self.read().active.clone()
    }

    /// The index answering a Match under `epoch` at `now`.
    pub fn for_match(&self, epoch: u32, now: i64) -> Result<Arc<NationalIndex>, EpochRefusal> {
        let e = self.read();
        let active = e.active.epoch();
        if epoch == active.0 {
            return Ok(e.active.clone());
        }
        if let Some((previous, _)) = e
            .previous
            .as_ref()
            .filter(|(p, until)| p.epoch().0 == epoch && now < *until)
        {
            return Ok(previous.clone());
        }
        if e.building.is_some_and(|b| b.0 == epoch) {
            return Err(EpochRefusal::Building { epoch, active });
        }
        let previous = e.previous.as_ref().map(|(p, _)| p.epoch().0);
        if e.retired.contains(&epoch) || previous == Some(epoch) {
            return Err(EpochRefusal::Retired { epoch, active });
        }
        Err(EpochRefusal::Unknown {
            epoch,
            serving: active.to_string(),
        })
    }

    /// Where the rotation stands. The previous epoch in its grace is stored as retired
    /// (a restart ends the grace) but is not shown so while it still answers.
    pub fn status(&self) -> EpochStatus {
        let e = self.read();
        let previous = e.previous.as_ref().map(|(p, until)| (p.epoch(), *until));
        EpochStatus {
            active: e.active.epoch(),
            building: e.building,
            previous,
            retired: e
                .retired
                .iter()
                .copied()
                .filter(|r| previous.is_none_or(|(p, _)| p.0 != *r))
                .collect(),
        }
    }

    /// The epoch a rotation would build next: one above every epoch this node has
    /// used.
    pub fn next_epoch(&self) -> KeyEpoch {
        let e = self.read();
        let highest = e
            .retired
            .iter()
            .copied()
            .chain([e.active.epoch().0])
            .max()
            .unwrap_or(0);
        KeyEpoch(highest.saturating_add(1))
    }

    /// Marks the start of building `next`; refused while a rotation is under way.
    pub fn begin(&self, next: KeyEpoch) -> Result<(), RotationError> {
        let mut e = self.write();
        if let Some(under_way) = e.building {
            return Err(RotationError::UnderWay(under_way));
        }
        if let Some((previous, _)) = &e.previous {
            return Err(RotationError::InGrace(previous.epoch()));
        }
        e.building = Some(next);
        Ok(())
    }

    /// The next index is built: it becomes active, and the old one answers a Match
    /// until `grace_until`. Recorded through `commit` (with the caller's audit event,
    /// given the old and the new epoch) before the switch; a restart starts under
    /// the new epoch.
    pub fn switch(
        &self,
        next: Arc<NationalIndex>,
        grace_until: i64,
        commit: &dyn Fn(Batch, KeyEpoch, KeyEpoch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Written before the swap, outside the lock Match takes: nothing else changes
        // the epochs while `building` is set (`begin` refuses).
        let (old, stored) = {
            let e = self.read();
            let mut retired = e.retired.clone();
            retired.push(e.active.epoch().0);
            let stored = StoredEpochs {
                active: Some(next.epoch().0),
                retired,
            };
            (e.active.epoch(), stored)
        };
        commit(stored.batch(), old, next.epoch())?;
        let mut e = self.write();
        let previous = std::mem::replace(&mut e.active, next);
        e.previous = Some((previous, grace_until));
        e.building = None;
        e.retired = stored.retired;
        Ok(())
    }

    /// Building failed: back to the active epoch alone.
    pub fn abandon(&self) {
        self.write().building = None;
    }

    /// Ends the previous epoch's grace once `now` has passed it; returns that epoch's
    /// index, so the caller can erase its stored digests.
    pub fn end_grace(&self, now: i64) -> Option<Arc<NationalIndex>> {
        let mut e = self.write();
        match &e.previous {
            Some((_, until)) if now >= *until => e.previous.take().map(|(p, _)| p),
            _ => None,
        }
    }
}

/// The stored check value of an epoch's key (in [`Table::Meta`]): a digest that shows
/// whether a seed still derives the key an index was built with, and nothing else.
fn key_check_name(epoch: KeyEpoch) -> Vec<u8> {
    let mut name = b"key_check_".to_vec();
    name.extend_from_slice(&epoch.0.to_be_bytes());
    name
}

/// Whether `key` is the key this store's digests of its epoch were made with. A
/// first use of the epoch stores its check value and is accepted.
pub fn check_key(store: &dyn Store, key: &NodeKey) -> Result<bool, StoreError> {
    let name = key_check_name(key.epoch());
    let check = key.check_value().0;
    match store.get(Table::Meta, &name)? {
        Some(stored) => Ok(stored == check),
        None => {
            let mut batch = Batch::new();
            batch.put(Table::Meta, name, check.to_vec());
            store.apply(&batch)?;
            Ok(true)
        }
    }
}

/// Forgets the check value of `epoch`'s key (before a rotation builds it afresh).
pub fn forget_key(store: &dyn Store, epoch: KeyEpoch) -> Result<(), StoreError> {
    let mut batch = Batch::new();
    batch.delete(Table::Meta, key_check_name(epoch));
    store.apply(&batch)
}
