//! The durability tester behind `flushctl durability`: writers append sequenced,
//! checksummed [`record`]s to a target file, every acknowledged record is logged by a
//! witness, and after a crash the target is compared with the witness.
//!
//! - [`record`]: the record codec and the classification of what a slot holds.

pub mod record;
