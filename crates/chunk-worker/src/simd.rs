//! Loads and stores of AVX2 registers from and to byte arrays, for the
//! integer kernels of `convert` and `video`: the only `unsafe` those
//! kernels need (every other intrinsic they call is safe inside a
//! `#[target_feature(enable = "avx2")]` function).

use std::arch::x86_64::{
    __m128i, __m256i, _mm_storeu_si128, _mm256_loadu_si256, _mm256_storeu_si256,
};

/// 32 bytes as a register.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn load(bytes: &[u8; 32]) -> __m256i {
    #[allow(unsafe_code)] // an unaligned load; see SAFETY
    // SAFETY: `bytes` is 32 readable bytes, and `loadu` has no alignment
    // requirement.
    unsafe {
        _mm256_loadu_si256(bytes.as_ptr().cast())
    }
}

/// A register as 32 bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn store(bytes: &mut [u8; 32], v: __m256i) {
    #[allow(unsafe_code)] // an unaligned store; see SAFETY
    // SAFETY: `bytes` is 32 writable bytes, and `storeu` has no alignment
    // requirement.
    unsafe {
        _mm256_storeu_si256(bytes.as_mut_ptr().cast(), v)
    }
}

/// A half register as 16 bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn store_half(bytes: &mut [u8; 16], v: __m128i) {
    #[allow(unsafe_code)] // an unaligned store; see SAFETY
    // SAFETY: `bytes` is 16 writable bytes, and `storeu` has no alignment
    // requirement.
    unsafe {
        _mm_storeu_si128(bytes.as_mut_ptr().cast(), v)
    }
}
