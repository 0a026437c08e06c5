//! Who is calling: token and key verification, against the `Credentials` that `config` parses
//! (the secret keys' type, `ServiceKeys`, lives here). It imports nothing else of the crate;
//! `http::extract` makes `Caller` an extractor and its refusals HTTP answers.
//!
//! The token only says *who*; what a caller may touch is decided in the handlers, and the data
//! always comes from `auth.users`.

mod caller;
mod error;
mod jwks;
pub mod mint;
mod verifier;
pub mod webhook;

pub use caller::Caller;
pub use error::AuthError;
pub use jwks::KeysHealth;
pub use verifier::{Credentials, JwksSource, ServiceKeys, Verifier};
