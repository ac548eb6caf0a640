//! The kernels as Burn operations on the host backends: forward only on the backend itself,
//! forward plus a hand-written backward step under `Autodiff`.
//!
//! Each operation's public entry point is generic over the caller's backend, and Rust compiles
//! generic code in the crate that instantiates it. Had the entry points called the generic
//! forward and backward steps for `Flex` and `NdArray` directly, every crate and test binary
//! that uses a layer would compile all of them again, for both backends, autodiff included:
//! a third of a test binary's build. They call the non-generic functions [`compiled_here!`]
//! defines instead, which are compiled once, here.

/// `fn name(args) -> ret = generic::<Host>`: a non-generic function calling `generic` for one
/// host backend, so that its code is compiled in this crate only.
macro_rules! compiled_here {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $generic:ident::<$host:ty>;)+) => {
        $(
            #[inline(never)]
            fn $name($($arg: $ty),*) -> $ret {
                $generic::<$host>($($arg),*)
            }
        )+
    };
}

pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod layer_norm;
pub mod linear;
mod record;
pub mod rope;
pub mod swiglu;
