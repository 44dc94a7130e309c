//! Key epochs and their rotation (DESIGN section 5): which match index answers a
//! Match of a given epoch, which epoch this node's searches use, and the steps of a
//! rotation to the network's next matching secret.
//!
//! A rotation has three states on a node:
//!
//! * **stable**: one index, for the active epoch; earlier epochs are retired.
//! * **building**: the index for the next epoch is being built from the stored
//!   records in the background; the active one answers as before.
//! * **transition**: both indexes answer, each for its own epoch; searches still go
//!   out under the active epoch, since peers may not have the next one yet.
//!
//! Finishing makes the next epoch active (searches go out under it) and retires the
//! old one: a Match under it is refused with an error that names the epoch served.
//! Imports and erasures wait while a rotation is under way (they would change one
//! index and not the other).

use std::sync::{Arc, PoisonError, RwLock};

use crate::{
    domain::index::NationalIndex,
    domain::pseudonymise::KeyEpoch,
    store::{Batch, Store, StoreError, Table},
};

/// The rotation's state, as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochStatus {
    /// The epoch searches go out under and Match is answered for.
    pub active: KeyEpoch,
    /// The next epoch, while it is built or in transition.
    pub next: Option<KeyEpoch>,
    /// Whether the next epoch's index is still being built.
    pub building: bool,
    /// Epochs this node no longer answers.
    pub retired: Vec<u32>,
}

impl EpochStatus {
    /// `stable`, `building` or `transition`.
    pub fn phase(&self) -> &'static str {
        match (self.next, self.building) {
            (None, _) => "stable",
            (Some(_), true) => "building",
            (Some(_), false) => "transition",
        }
    }
}

/// Why a Match under an epoch is not answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EpochRefusal {
    /// The epoch was retired by a rotation.
    #[error(
        "field `key_epoch`: epoch {epoch} was retired on this node; it answers under epoch {active}"
    )]
    Retired {
        /// The epoch asked for.
        epoch: u32,
        /// The active epoch.
        active: KeyEpoch,
    },
    /// The epoch's index is still being built.
    #[error(
        "field `key_epoch`: epoch {epoch} is still being built on this node; it answers under epoch {active} until then"
    )]
    Building {
        /// The epoch asked for.
        epoch: u32,
        /// The active epoch.
        active: KeyEpoch,
    },
    /// The epoch is unknown here.
    #[error(
        "field `key_epoch`: epoch {epoch} is not served by this node; it answers under epoch {serving}"
    )]
    Unknown {
        /// The epoch asked for.
        epoch: u32,
        /// The epochs served, like `1` or `1 and 2`.
        serving: String,
    },
}

/// Why a rotation step is refused.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// No next secret is configured.
    #[error(
        "no next matching secret is configured: set matching.next_secret_file and matching.next_key_epoch, restart, then rotate"
    )]
    NoNextSecret,
    /// A rotation is already under way.
    #[error("a rotation to epoch {0} is already under way")]
    UnderWay(KeyEpoch),
    /// Finishing before the next index is ready.
    #[error("the index for epoch {0} is still being built; finish once it is ready")]
    NotReady(KeyEpoch),
    /// Finishing without a rotation.
    #[error("no rotation is under way; start one with `adep keys rotate`")]
    NotStarted,
    /// The next secret file is unusable.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// The rotation's background work failed.
    #[error("the rotation task failed")]
    Task,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
struct Epochs {
    active: Arc<NationalIndex>,
    next: Option<Arc<NationalIndex>>,
    building: Option<KeyEpoch>,
    retired: Vec<u32>,
}

/// The indexes a node answers with, one per served epoch.
#[derive(Debug)]
pub struct Indexes {
    epochs: RwLock<Epochs>,
}

const META_ACTIVE: &[u8] = b"key_epoch";
const META_NEXT: &[u8] = b"next_key_epoch";
const META_RETIRED: &[u8] = b"retired_key_epochs";

/// What the store says about epochs: the active one, the one in transition, the
/// retired ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredEpochs {
    /// The epoch the node last answered under, if it ever ran.
    pub active: Option<u32>,
    /// The epoch of a rotation in transition.
    pub next: Option<u32>,
    /// Retired epochs.
    pub retired: Vec<u32>,
}

impl StoredEpochs {
    /// Reads the epochs from the store's metadata.
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
        let next = store.get(Table::Meta, META_NEXT)?.map(u32_of).transpose()?;
        let retired = store
            .get(Table::Meta, META_RETIRED)?
            .map(|v| {
                v.chunks(4)
                    .map(|c| u32_of(c.to_vec()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(StoredEpochs {
            active,
            next,
            retired,
        })
    }

    /// Writes the epochs durably.
    pub fn write(&self, store: &dyn Store) -> Result<(), StoreError> {
        store.apply(&self.batch())
    }

    /// The durable batch that writes the epochs, for a caller that adds the step's
    /// audit event to it.
    pub fn batch(&self) -> Batch {
        let mut batch = Batch::new();
        match self.active {
            Some(a) => batch.put(Table::Meta, META_ACTIVE, a.to_be_bytes()),
            None => batch.delete(Table::Meta, META_ACTIVE),
        }
        match self.next {
            Some(n) => batch.put(Table::Meta, META_NEXT, n.to_be_bytes()),
            None => batch.delete(Table::Meta, META_NEXT),
        }
        let retired: Vec<u8> = self.retired.iter().flat_map(|e| e.to_be_bytes()).collect();
        batch.put(Table::Meta, META_RETIRED, retired);
        batch
    }
}

impl Indexes {
    /// A node answering under `active` only (plus `next` in transition).
    pub fn new(
        active: Arc<NationalIndex>,
        next: Option<Arc<NationalIndex>>,
        retired: Vec<u32>,
    ) -> Indexes {
        Indexes {
            epochs: RwLock::new(Epochs {
                active,
                next,
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

    /// The active index: searches hash under it, imports write through it, and the
    /// records are read from its store.
    pub fn active(&self) -> Arc<NationalIndex> {
        self.read().active.clone()
    }

    /// The index answering a Match under `epoch`.
    pub fn for_match(&self, epoch: u32) -> Result<Arc<NationalIndex>, EpochRefusal> {
        let e = self.read();
        let active = e.active.epoch();
        if epoch == active.0 {
            return Ok(e.active.clone());
        }
        if let Some(next) = e.next.as_ref().filter(|n| n.epoch().0 == epoch) {
            return Ok(next.clone());
        }
        if e.building.is_some_and(|b| b.0 == epoch) {
            return Err(EpochRefusal::Building { epoch, active });
        }
        if e.retired.contains(&epoch) {
            return Err(EpochRefusal::Retired { epoch, active });
        }
        Err(EpochRefusal::Unknown {
            epoch,
            serving: match &e.next {
                Some(n) => format!("{active} and {}", n.epoch()),
                None => active.to_string(),
            },
        })
    }

    /// Where the rotation stands.
    pub fn status(&self) -> EpochStatus {
        let e = self.read();
        EpochStatus {
            active: e.active.epoch(),
            next: e.next.as_ref().map(|n| n.epoch()).or(e.building),
            building: e.building.is_some(),
            retired: e.retired.clone(),
        }
    }

    /// Whether a rotation is under way (imports and erasures wait).
    pub fn rotating(&self) -> bool {
        let e = self.read();
        e.next.is_some() || e.building.is_some()
    }

    /// Marks the start of building `next`; refused when a rotation is under way.
    pub fn begin(&self, next: KeyEpoch) -> Result<(), RotationError> {
        let mut e = self.write();
        if let Some(under_way) = e.building.or(e.next.as_ref().map(|n| n.epoch())) {
            return Err(RotationError::UnderWay(under_way));
        }
        e.building = Some(next);
        Ok(())
    }

    /// The next index is built: both epochs answer from now on, and the transition
    /// is recorded through `commit` (with the caller's audit event) so that a restart
    /// resumes it.
    pub fn ready(
        &self,
        next: Arc<NationalIndex>,
        commit: &dyn Fn(Batch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Written before the swap, outside the lock Match takes: nothing else changes
        // the epochs while `building` is set (`begin` and `finish` refuse).
        let stored = {
            let e = self.read();
            StoredEpochs {
                active: Some(e.active.epoch().0),
                next: Some(next.epoch().0),
                retired: e.retired.clone(),
            }
        };
        commit(stored.batch())?;
        let mut e = self.write();
        e.building = None;
        e.next = Some(next);
        Ok(())
    }

    /// Building failed: back to the active epoch alone.
    pub fn abandon(&self) {
        self.write().building = None;
    }

    /// Makes the next epoch active and retires the old one, durably through `commit`
    /// (given the old and the new epoch, for the caller's audit event). Returns the old
    /// and the new epoch.
    pub fn finish(
        &self,
        commit: &dyn Fn(Batch, KeyEpoch, KeyEpoch) -> Result<(), StoreError>,
    ) -> Result<(KeyEpoch, KeyEpoch), RotationError> {
        let mut e = self.write();
        if let Some(b) = e.building {
            return Err(RotationError::NotReady(b));
        }
        let Some(next) = e.next.clone() else {
            return Err(RotationError::NotStarted);
        };
        let old = e.active.epoch();
        let mut retired = e.retired.clone();
        retired.push(old.0);
        let batch = StoredEpochs {
            active: Some(next.epoch().0),
            next: None,
            retired: retired.clone(),
        }
        .batch();
        commit(batch, old, next.epoch())?;
        e.active = next;
        e.next = None;
        e.retired = retired;
        Ok((old, e.active.epoch()))
    }
}
