//! `kiln` parse commands, end to end through the binary.
