//! tierlab facade.
pub use tierlab_wire as wire;
pub use tierlab_ipip as ipip;
