//! Who is calling: token and key verification. It imports only `config`; `http::extract` makes
//! `Caller` an extractor and its refusals HTTP answers.
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
pub use verifier::Verifier;
