//! The match key scheme's test vectors (docs/match-keys-v2.vectors.json), checked byte
//! for byte: normalisation, key texts, and the OPRF step of each key (the node's key
//! from its seed, the blinded, evaluated and finalized values, the digest). Another
//! implementation of docs/match-keys.md and RFC 9497 must reproduce this file exactly.
//! The OPRF library itself is checked against the RFC's own vectors for the suite.
//!
//! After an intended change of scheme (a new version), regenerate with
//! `ADEP_WRITE_VECTORS=1 cargo test -p adep-node --test match_key_vectors`.

use std::{fmt::Write as _, path::PathBuf};

use adep_node::{
    domain::identity::Identity,
    domain::pseudonymise::{
        self, KeyEpoch, KeyedDigest, Side,
        oprf::{self, NodeKey},
    },
};
use serde_json::{Value, json};
use voprf::{EvaluationElement, Group, OprfClient, OprfServer, Ristretto255};

const SEED_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The blinding scalar of every vector: RFC 9497's own (appendix A.1.1).
const BLIND_HEX: &str = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vectors() -> Value {
    let names = [
        "MÜLLER",
        "Mueller",
        "Strauß",
        "García-López",
        "van der Berg",
        "O'Brien",
        "Mc Carthy",
        "Jean-Pierre",
        "Гусев",
        "Юрий",
        "Παπαδόπουλος",
        "Γιώργος",
        "Ｍｕｌｌｅｒ",
        "El Amrani",
        "N'Diaye",
        "Øster-Ålund",
        "İlhan",
        "ŁUKASZ",
    ];
    let normalisation: Vec<Value> = names
        .iter()
        .map(|n| json!({ "input": n, "tokens": pseudonymise::normalise(n) }))
        .collect();
    let phonetic: Vec<Value> = [
        "muller", "gusev", "gussew", "iurii", "juri", "mohamed", "muhammad", "yusuf",
    ]
    .iter()
    .map(|t| json!({ "token": t, "codes": pseudonymise::phonetic(t) }))
    .collect();
    let identities = [
        (
            "García López",
            "Ana María",
            "1980-02-29",
            vec![],
            Side::Record,
        ),
        (
            "Гусев",
            "Юрий",
            "1978-03-21",
            vec![("Gusev".to_owned(), "Yuri".to_owned())],
            Side::Record,
        ),
        ("van der Berg", "", "1961-07", vec![], Side::Record),
        ("Mohammed", "", "1990-11-05", vec![], Side::Query),
        ("O'Brien", "Sean", "1955", vec![], Side::Query),
    ];
    let seed = unhex(SEED_HEX);
    let blind = <Ristretto255 as Group>::deserialize_scalar(&unhex(BLIND_HEX)).expect("scalar");
    let mut epochs = Vec::new();
    for epoch in [1u32, 2] {
        let p = NodeKey::derive(&seed, KeyEpoch(epoch)).expect("key");
        let server = OprfServer::<Ristretto255>::new_from_seed(
            &seed,
            oprf::key_info(KeyEpoch(epoch)).as_bytes(),
        )
        .expect("server");
        let cases: Vec<Value> = identities
            .iter()
            .map(|(family, given, dob, aliases, side)| {
                let identity = Identity::from_fields(family, given, dob, aliases).expect("valid");
                let keys: Vec<Value> = pseudonymise::derive_keys(&identity, *side)
                    .iter()
                    .map(|k| {
                        let text = k.text().as_bytes();
                        let blinded =
                            OprfClient::<Ristretto255>::deterministic_blind_unchecked(text, blind)
                                .expect("blind");
                        let evaluated = server.blind_evaluate(&blinded.message);
                        let output = blinded.state.finalize(text, &evaluated).expect("finalize");
                        let digest = p.digest(k);
                        assert_eq!(&output[..16], &digest.0[..], "client and server agree");
                        json!({
                            "kind": k.kind().name(),
                            "code": k.kind().code(),
                            "quality": k.kind().quality().name(),
                            "text": k.text(),
                            "blinded": hex(&blinded.message.serialize()),
                            "evaluated": hex(&evaluated.serialize()),
                            "output": hex(&output),
                            "digest": hex(&digest.0),
                        })
                    })
                    .collect();
                json!({
                    "family_name": family,
                    "given_names": given,
                    "date_of_birth": dob,
                    "aliases": aliases.iter().map(|(f, g)| format!("{f}/{g}")).collect::<Vec<_>>(),
                    "side": match side { Side::Record => "record", Side::Query => "query" },
                    "keys": keys,
                })
            })
            .collect();
        epochs.push(json!({
            "epoch": epoch,
            "key_info": oprf::key_info(KeyEpoch(epoch)),
            "key": hex(&p.scalar_bytes()),
            "identities": cases,
        }));
    }
    json!({
        "scheme": pseudonymise::SCHEME_VERSION,
        "suite": "RFC 9497 OPRF, base mode, ristretto255-SHA512",
        "seed_hex": SEED_HEX,
        "blind_hex": BLIND_HEX,
        "digest_bytes": pseudonymise::DIGEST_BYTES,
        "normalisation": normalisation,
        "phonetic": phonetic,
        "epochs": epochs,
    })
}

#[test]
fn test_vectors_match_byte_for_byte() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/match-keys-v2.vectors.json");
    let mut generated = serde_json::to_string_pretty(&vectors()).expect("json");
    generated.push('\n');
    if std::env::var_os("ADEP_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &generated).expect("write vectors");
    }
    let stored =
        std::fs::read_to_string(&path).expect("docs/match-keys-v2.vectors.json is readable");
    assert!(
        stored == generated,
        "the scheme no longer reproduces docs/match-keys-v2.vectors.json; a change of keys is a new scheme version"
    );
}

/// RFC 9497 appendix A.1.1: the suite's own vectors, through the library the node uses.
#[test]
fn the_oprf_library_reproduces_rfc_9497s_vectors() {
    let seed = [0xa3u8; 32];
    let server = OprfServer::<Ristretto255>::new_from_seed(&seed, b"test key").expect("server");
    assert_eq!(
        hex(&server.serialize()),
        "5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e"
    );
    let blind = <Ristretto255 as Group>::deserialize_scalar(&unhex(
        "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706",
    ))
    .expect("scalar");
    let cases = [
        (
            "00",
            "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c",
            "7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e",
            "527759c3d9366f277d8c6020418d96bb393ba2afb20ff90df23fb7708264e2f3ab9135e3bd69955851de4b1f9fe8a0973396719b7912ba9ee8aa7d0b5e24bcf6",
        ),
        (
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
            "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418",
            "b4cbf5a4f1eeda5a63ce7b77c7d23f461db3fcab0dd28e4e17cecb5c90d02c25",
            "f4a74c9c592497375e796aa837e907b1a045d34306a749db9f34221f7e750cb4f2a6413a6bf6fa5e19ba6348eb673934a722a7ede2e7621306d18951e7cf2c73",
        ),
    ];
    for (input, blinded_hex, evaluated_hex, output_hex) in cases {
        let input = unhex(input);
        let blinded = OprfClient::<Ristretto255>::deterministic_blind_unchecked(&input, blind)
            .expect("blind");
        assert_eq!(hex(&blinded.message.serialize()), blinded_hex);
        let evaluated = server.blind_evaluate(&blinded.message);
        assert_eq!(hex(&evaluated.serialize()), evaluated_hex);
        let received =
            EvaluationElement::<Ristretto255>::deserialize(&unhex(evaluated_hex)).expect("element");
        let output = blinded.state.finalize(&input, &received).expect("finalize");
        assert_eq!(hex(&output), output_hex);
        assert_eq!(hex(&server.evaluate(&input).expect("evaluate")), output_hex);
    }
}
