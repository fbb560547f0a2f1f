//! The partition log. (Being written.)
