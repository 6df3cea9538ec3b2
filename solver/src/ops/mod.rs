//! The operations a vertex can run. The scheduler knows none of them; the solver's
//! vertex runner matches on the op and calls one of these modules.

pub mod copy;
