//! The stateless TCP responder on real segments.
