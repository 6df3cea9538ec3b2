//! `kiln` store commands, end to end through the binary.
