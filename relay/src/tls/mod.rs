//! The relay's TLS certificate: from files or a self-signed CA ([`certs`]),
//! or from an ACME CA and renewed ([`acme`]), swapped while serving
//! ([`resolver`]).

pub mod acme;
pub mod acme_cluster;
pub mod certs;
pub mod resolver;
