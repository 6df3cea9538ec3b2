//! `kiln` sandbox commands, end to end through the binary.
