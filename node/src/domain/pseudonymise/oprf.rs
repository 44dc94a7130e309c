//! Scheme v2's keyed step: the oblivious PRF of RFC 9497 in its base mode with the
//! ristretto255-SHA512 suite, through the `voprf` crate.
//!
//! Each node has its own key per epoch ([`NodeKey`]), derived from its own seed file
//! with RFC 9497 `DeriveKeyPair` and an info string naming the scheme and the epoch.
//! The node keys its own index with it ([`NodeKey`] is a [`KeyedDigest`]); a peer
//! obtains the same digests without learning the key, and without the node seeing a
//! key text: the peer blinds each text ([`Blinded::blind`]), the node evaluates the
//! blinded elements ([`NodeKey::evaluate`]), and the peer unblinds and finalizes
//! them ([`Blinded::finalize`]). A digest is the first 128 bits of the OPRF output.

use std::fmt;

use voprf::{BlindedElement, EvaluationElement, OprfClient, OprfServer, Ristretto255};

use super::{DIGEST_BYTES, Digest, HashedKey, KeyEpoch, KeyMaterial, KeyedDigest};

/// Bytes of a serialised ristretto255 element (blinded or evaluated).
pub const ELEMENT_BYTES: usize = 32;
/// Bytes of a node's key seed.
pub const SEED_BYTES: usize = 32;
/// The input whose digest checks, at start-up, that the seed still derives the key an
/// index was built with.
pub const KEY_CHECK_INPUT: &[u8] = b"adep key check";

/// The RFC 9497 `DeriveKeyPair` info string of an epoch's key: it binds the scheme
/// version and the epoch.
pub fn key_info(epoch: KeyEpoch) -> String {
    format!("adep match keys v2 epoch {}", epoch.0)
}

/// A group element as it travels between nodes: 32 bytes, opaque. Hidden in `Debug`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Element(pub [u8; ELEMENT_BYTES]);

impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Element(..)")
    }
}

impl TryFrom<&[u8]> for Element {
    type Error = usize;

    /// Fails with the length when it is not [`ELEMENT_BYTES`].
    fn try_from(bytes: &[u8]) -> Result<Element, usize> {
        bytes.try_into().map(Element).map_err(|_| bytes.len())
    }
}

/// Why a batch of elements was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElementError {
    /// An element is not the encoding of a ristretto255 element other than the
    /// identity.
    #[error("field `subjects[{subject}].elements[{element}]`: not a ristretto255 element")]
    Malformed {
        /// The subject's position.
        subject: usize,
        /// The element's position in the subject.
        element: usize,
    },
    /// The answer does not hold one element per element asked.
    #[error("the answer holds {got} elements for subject {subject}; {expected} were asked")]
    Shape {
        /// The subject's position.
        subject: usize,
        /// Elements asked.
        expected: usize,
        /// Elements answered.
        got: usize,
    },
}

/// A node's PRF key for one epoch. Never leaves the node; hidden in `Debug`.
pub struct NodeKey {
    epoch: KeyEpoch,
    server: OprfServer<Ristretto255>,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey(epoch {})", self.epoch)
    }
}

impl NodeKey {
    /// Derives the epoch's key from the node's seed (RFC 9497 `DeriveKeyPair` with
    /// [`key_info`]). None only for a seed longer than the RFC allows, which a
    /// [`SEED_BYTES`] seed never is.
    pub fn derive(seed: &[u8], epoch: KeyEpoch) -> Option<NodeKey> {
        let server = OprfServer::new_from_seed(seed, key_info(epoch).as_bytes()).ok()?;
        Some(NodeKey { epoch, server })
    }

    /// The epoch this key belongs to.
    pub fn epoch(&self) -> KeyEpoch {
        self.epoch
    }

    /// The private scalar, serialised (test vectors only).
    pub fn scalar_bytes(&self) -> Vec<u8> {
        self.server.serialize().to_vec()
    }

    /// The digest of [`KEY_CHECK_INPUT`]: equal for equal keys, and saying nothing
    /// else of the key.
    pub fn check_value(&self) -> Digest {
        self.digest_text(KEY_CHECK_INPUT)
    }

    /// Evaluates a peer's blinded elements, subject by subject.
    pub fn evaluate(&self, subjects: &[Vec<Element>]) -> Result<Vec<Vec<Element>>, ElementError> {
        subjects
            .iter()
            .enumerate()
            .map(|(subject, elements)| {
                elements
                    .iter()
                    .enumerate()
                    .map(|(element, e)| {
                        let blinded = BlindedElement::<Ristretto255>::deserialize(&e.0)
                            .map_err(|_| ElementError::Malformed { subject, element })?;
                        Ok(element_of(
                            &self.server.blind_evaluate(&blinded).serialize(),
                        ))
                    })
                    .collect()
            })
            .collect()
    }
}

fn element_of(bytes: &[u8]) -> Element {
    let mut e = [0u8; ELEMENT_BYTES];
    e.copy_from_slice(&bytes[..ELEMENT_BYTES]);
    Element(e)
}

fn digest_of(output: &[u8]) -> Digest {
    let mut d = [0u8; DIGEST_BYTES];
    d.copy_from_slice(&output[..DIGEST_BYTES]);
    Digest(d)
}

impl KeyedDigest for NodeKey {
    fn epoch(&self) -> KeyEpoch {
        NodeKey::epoch(self)
    }

    fn digest_text(&self, text: &[u8]) -> Digest {
        // Only an empty input or one over 65,535 bytes fails; key texts are neither
        // (a kind name, then bounded fields).
        match self.server.evaluate(text) {
            Ok(output) => digest_of(&output),
            Err(_) => Digest([0; DIGEST_BYTES]),
        }
    }
}

/// One key text blinded for the peers, with what unblinds it.
struct BlindedKey {
    key: KeyMaterial,
    client: OprfClient<Ristretto255>,
}

/// A search's key texts, blinded once for every peer: the elements to send, and what
/// finalizes each peer's answer into its digests. Stays on the requesting node.
pub struct Blinded {
    subjects: Vec<Vec<BlindedKey>>,
    elements: Vec<Vec<Element>>,
}

impl fmt::Debug for Blinded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blinded({} subjects)", self.subjects.len())
    }
}

impl Blinded {
    /// Blinds each subject's keys with fresh random scalars. None if the system
    /// random generator fails.
    pub fn blind(subjects: Vec<Vec<KeyMaterial>>) -> Option<Blinded> {
        let mut rng = rand_core::OsRng;
        let mut blinded = Vec::with_capacity(subjects.len());
        let mut elements = Vec::with_capacity(subjects.len());
        for keys in subjects {
            let mut these = Vec::with_capacity(keys.len());
            let mut sent = Vec::with_capacity(keys.len());
            for key in keys {
                let result =
                    OprfClient::<Ristretto255>::blind(key.text.as_bytes(), &mut rng).ok()?;
                sent.push(element_of(&result.message.serialize()));
                these.push(BlindedKey {
                    key,
                    client: result.state,
                });
            }
            blinded.push(these);
            elements.push(sent);
        }
        Some(Blinded {
            subjects: blinded,
            elements,
        })
    }

    /// The blinded elements, subject by subject, in the order of the keys.
    pub fn elements(&self) -> &[Vec<Element>] {
        &self.elements
    }

    /// Elements in all.
    pub fn len(&self) -> usize {
        self.elements.iter().map(Vec::len).sum()
    }

    /// Whether there is no element at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unblinds one peer's evaluation and finalizes it into the subjects' keyed
    /// digests under that peer's key, each with its kind, sorted and deduplicated.
    pub fn finalize(
        &self,
        evaluated: &[Vec<Element>],
    ) -> Result<Vec<Vec<HashedKey>>, ElementError> {
        if evaluated.len() != self.subjects.len() {
            return Err(ElementError::Shape {
                subject: evaluated.len().min(self.subjects.len()),
                expected: self.subjects.len(),
                got: evaluated.len(),
            });
        }
        self.subjects
            .iter()
            .zip(evaluated)
            .enumerate()
            .map(|(subject, (keys, answer))| {
                if keys.len() != answer.len() {
                    return Err(ElementError::Shape {
                        subject,
                        expected: keys.len(),
                        got: answer.len(),
                    });
                }
                let mut hashed = keys
                    .iter()
                    .zip(answer)
                    .enumerate()
                    .map(|(element, (k, e))| {
                        let malformed = ElementError::Malformed { subject, element };
                        let evaluation = EvaluationElement::<Ristretto255>::deserialize(&e.0)
                            .map_err(|_| malformed.clone())?;
                        let output = k
                            .client
                            .finalize(k.key.text.as_bytes(), &evaluation)
                            .map_err(|_| malformed)?;
                        Ok(HashedKey {
                            kind: k.key.kind,
                            digest: digest_of(&output),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                hashed.sort_unstable_by_key(|k| (k.kind, k.digest));
                hashed.dedup();
                Ok(hashed)
            })
            .collect()
    }
}
