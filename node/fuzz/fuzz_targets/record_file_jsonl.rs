//! A record file in JSON Lines: arbitrary bytes through `read_records`. Never a panic;
//! what is accepted keeps every bound; a refusal names the line and the field, never
//! the value.

#![no_main]

use adep_node::domain::identity::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| adep_node_fuzz::fuzz_record_file(bytes, Format::JsonLines));
