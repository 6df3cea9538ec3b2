//! Registry push and pull (OCI distribution protocol) through oci-client.
