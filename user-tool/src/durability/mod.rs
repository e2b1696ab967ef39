//! The durability tester behind `flushctl durability`: writers append sequenced,
//! checksummed [`record`]s to a target file, every acknowledged record is logged by a
//! [`witness`] (a local file, or the remote witness service of [`net`]), and after a
//! crash the target is compared with the witness.
//!
//! - [`record`]: the record codec and the classification of what a slot holds.
//! - [`witness`]: witness entries, their validation and the witness file.
//! - [`net`]: the remote witness (TCP service and client).
//! - [`target`]: how each pattern opens the target, positional writes (per platform).
//! - [`smb`]: the `smb://` target, an SMB2/3 client that puts each pattern on the wire.
//! - [`run`]: the writers; [`verify`]: the comparison after a crash.

pub mod net;
pub mod record;
pub mod run;
pub mod smb;
pub mod target;
pub mod verify;
pub mod witness;
