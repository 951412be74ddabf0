//! Pure-Rust cblas functions, compiled only when no system BLAS was found.
//!
//! They cover exactly the symbols ndarray 0.17 calls with its `blas` feature (gemm for the four
//! element types, gemv and dot for f32/f64), with cblas semantics: row- or column-major layout,
//! transposes, leading dimensions, negative vector increments and `beta == 0` ignoring `C`.

use matrixmultiply::CGemmOption;
use std::ffi::{c_double, c_float, c_int};

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const CONJ_TRANS: c_int = 113;

/// Row and column strides of `op(X)` for a matrix stored with leading dimension `ld`.
fn strides(layout: c_int, trans: c_int, ld: c_int) -> (isize, isize) {
    let ld = ld as isize;
    match (layout == ROW_MAJOR, trans == NO_TRANS) {
        (true, true) | (false, false) => (ld, 1),
        (true, false) | (false, true) => (1, ld),
    }
}

/// Pointer to the logical first element of a strided vector (cblas starts negative increments at
/// the far end) and its stride.
unsafe fn vector<T>(ptr: *const T, len: c_int, inc: c_int) -> (*const T, isize) {
    let inc = inc as isize;
    let start = if inc < 0 { (1 - len as isize) * inc } else { 0 };
    // SAFETY: the caller's vector holds `len` elements `inc` apart.
    (unsafe { ptr.offset(start) }, inc)
}

macro_rules! real_gemm {
    ($name:ident, $t:ty, $mm:path) => {
        /// # Safety
        /// cblas contract: the pointers hold matrices of the given sizes and leading dimensions.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            layout: c_int,
            transa: c_int,
            transb: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: $t,
            a: *const $t,
            lda: c_int,
            b: *const $t,
            ldb: c_int,
            beta: $t,
            c: *mut $t,
            ldc: c_int,
        ) {
            if m <= 0 || n <= 0 {
                return;
            }
            let (rsa, csa) = strides(layout, transa, lda);
            let (rsb, csb) = strides(layout, transb, ldb);
            let (rsc, csc) = strides(layout, NO_TRANS, ldc);
            // SAFETY: forwarded cblas contract.
            unsafe {
                $mm(
                    m as usize,
                    k.max(0) as usize,
                    n as usize,
                    alpha,
                    a,
                    rsa,
                    csa,
                    b,
                    rsb,
                    csb,
                    beta,
                    c,
                    rsc,
                    csc,
                )
            }
        }
    };
}

real_gemm!(cblas_sgemm, c_float, matrixmultiply::sgemm);
real_gemm!(cblas_dgemm, c_double, matrixmultiply::dgemm);

macro_rules! complex_gemm {
    ($name:ident, $t:ty, $mm:path) => {
        /// # Safety
        /// cblas contract: the pointers hold matrices of the given sizes and leading dimensions.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            layout: c_int,
            transa: c_int,
            transb: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: *const [$t; 2],
            a: *const [$t; 2],
            lda: c_int,
            b: *const [$t; 2],
            ldb: c_int,
            beta: *const [$t; 2],
            c: *mut [$t; 2],
            ldc: c_int,
        ) {
            if m <= 0 || n <= 0 {
                return;
            }
            // Stored shapes as (lines, elements per line): op(A) is m x k, op(B) is k x n.
            let stored = |trans, r, c| {
                if (layout == ROW_MAJOR) == (trans == NO_TRANS) {
                    (r, c)
                } else {
                    (c, r)
                }
            };
            // SAFETY: forwarded cblas contract; conjugated copies cover the same elements.
            unsafe {
                let a_conj = conjugated(transa, a, stored(transa, m, k), lda);
                let b_conj = conjugated(transb, b, stored(transb, k, n), ldb);
                let a = a_conj.as_ref().map_or(a, |v| v.as_ptr());
                let b = b_conj.as_ref().map_or(b, |v| v.as_ptr());
                let (rsa, csa) = strides(layout, transa, lda);
                let (rsb, csb) = strides(layout, transb, ldb);
                let (rsc, csc) = strides(layout, NO_TRANS, ldc);
                $mm(
                    CGemmOption::Standard,
                    CGemmOption::Standard,
                    m as usize,
                    k.max(0) as usize,
                    n as usize,
                    *alpha,
                    a,
                    rsa,
                    csa,
                    b,
                    rsb,
                    csb,
                    *beta,
                    c,
                    rsc,
                    csc,
                )
            }
        }
    };
}

/// A conjugated copy of a stored matrix (`lines` lines of `len` elements, `ld` apart) when
/// `trans` asks for the conjugate transpose, which matrixmultiply does not do itself.
unsafe fn conjugated<T: Copy + std::ops::Neg<Output = T>>(
    trans: c_int,
    x: *const [T; 2],
    (lines, len): (c_int, c_int),
    ld: c_int,
) -> Option<Vec<[T; 2]>> {
    (trans == CONJ_TRANS && lines > 0 && len > 0).then(|| {
        let len = (lines as usize - 1) * ld as usize + len as usize;
        // SAFETY: the caller's matrix spans `lines - 1` strides of `ld` plus one line.
        unsafe { std::slice::from_raw_parts(x, len) }
            .iter()
            .map(|&[re, im]| [re, -im])
            .collect()
    })
}

complex_gemm!(cblas_cgemm, c_float, matrixmultiply::cgemm);
complex_gemm!(cblas_zgemm, c_double, matrixmultiply::zgemm);

macro_rules! gemv {
    ($name:ident, $t:ty, $mm:path) => {
        /// # Safety
        /// cblas contract: `a` is an `m x n` matrix, `x` and `y` vectors of matching lengths.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            layout: c_int,
            trans: c_int,
            m: c_int,
            n: c_int,
            alpha: $t,
            a: *const $t,
            lda: c_int,
            x: *const $t,
            incx: c_int,
            beta: $t,
            y: *mut $t,
            incy: c_int,
        ) {
            let (rows, cols) = if trans == NO_TRANS { (m, n) } else { (n, m) };
            if rows <= 0 {
                return;
            }
            let (rsa, csa) = strides(layout, trans, lda);
            // SAFETY: forwarded cblas contract.
            unsafe {
                let (x, incx) = vector(x, cols, incx);
                let (y, incy) = vector(y.cast_const(), rows, incy);
                $mm(
                    rows as usize,
                    cols.max(0) as usize,
                    1,
                    alpha,
                    a,
                    rsa,
                    csa,
                    x,
                    incx,
                    1,
                    beta,
                    y.cast_mut(),
                    incy,
                    1,
                )
            }
        }
    };
}

gemv!(cblas_sgemv, c_float, matrixmultiply::sgemm);
gemv!(cblas_dgemv, c_double, matrixmultiply::dgemm);

macro_rules! dot {
    ($name:ident, $t:ty) => {
        /// # Safety
        /// cblas contract: `x` and `y` hold `n` elements `incx`/`incy` apart.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            n: c_int,
            x: *const $t,
            incx: c_int,
            y: *const $t,
            incy: c_int,
        ) -> $t {
            // SAFETY: forwarded cblas contract.
            unsafe {
                let (x, incx) = vector(x, n, incx);
                let (y, incy) = vector(y, n, incy);
                (0..n.max(0) as isize)
                    .map(|i| *x.offset(i * incx) * *y.offset(i * incy))
                    .sum()
            }
        }
    };
}

dot!(cblas_sdot, c_float);
dot!(cblas_ddot, c_double);

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference `op(A) op(B)` on row-major dense inputs.
    fn reference(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        (0..m * n)
            .map(|ij| (0..k).map(|p| a[ij / n * k + p] * b[p * n + ij % n]).sum())
            .collect()
    }

    fn transpose(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
        (0..rows * cols)
            .map(|ij| x[(ij % rows) * cols + ij / rows])
            .collect()
    }

    #[test]
    fn dgemm_matches_reference_in_every_layout_and_transpose() {
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 2.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| 1.0 - i as f64 * 0.25).collect();
        let want = reference(&a, &b, m, k, n);
        for row_major in [true, false] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                // Store op(A) = A as A (or A^T stored transposed), in the requested layout.
                let store = |x: &[f64], r: usize, c: usize, t: bool| {
                    let stored_rows_major = if t { transpose(x, r, c) } else { x.to_vec() };
                    let (sr, sc) = if t { (c, r) } else { (r, c) };
                    if row_major {
                        (stored_rows_major, sc)
                    } else {
                        (transpose(&stored_rows_major, sr, sc), sr)
                    }
                };
                let (sa, lda) = store(&a, m, k, ta);
                let (sb, ldb) = store(&b, k, n, tb);
                let mut c = vec![f64::NAN; m * n];
                let ldc = if row_major { n } else { m };
                let trans = |t| if t { 112 } else { NO_TRANS };
                unsafe {
                    cblas_dgemm(
                        if row_major { ROW_MAJOR } else { 102 },
                        trans(ta),
                        trans(tb),
                        m as c_int,
                        n as c_int,
                        k as c_int,
                        1.0,
                        sa.as_ptr(),
                        lda as c_int,
                        sb.as_ptr(),
                        ldb as c_int,
                        0.0,
                        c.as_mut_ptr(),
                        ldc as c_int,
                    );
                }
                let got = if row_major { c } else { transpose(&c, n, m) };
                assert_eq!(got, want, "row_major={row_major} ta={ta} tb={tb}");
            }
        }
    }

    #[test]
    fn sgemv_and_sdot_follow_cblas_increments() {
        // A = [[1,2],[3,4]] row-major; y = 2*A^T x + 1*y with x read backwards (incx = -1).
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let x = [10.0f32, 1.0]; // logical x = [1, 10]
        let mut y = [1.0f32, 1.0];
        unsafe {
            cblas_sgemv(
                ROW_MAJOR,
                112,
                2,
                2,
                2.0,
                a.as_ptr(),
                2,
                x.as_ptr(),
                -1,
                1.0,
                y.as_mut_ptr(),
                1,
            )
        };
        assert_eq!(y, [2.0 * 31.0 + 1.0, 2.0 * 42.0 + 1.0]);
        let dot = unsafe { cblas_sdot(2, a.as_ptr(), 2, x.as_ptr(), 1) };
        assert_eq!(dot, 1.0 * 10.0 + 3.0 * 1.0);
    }

    #[test]
    fn cgemm_conjugate_transpose() {
        // op(A) = A^H for a 1x1 A = [1+2i]; B = [3+0i]: result (1-2i)*3.
        let a = [[1.0f32, 2.0]];
        let b = [[3.0f32, 0.0]];
        let mut c = [[0.0f32; 2]];
        unsafe {
            cblas_cgemm(
                ROW_MAJOR,
                CONJ_TRANS,
                NO_TRANS,
                1,
                1,
                1,
                &[1.0, 0.0],
                a.as_ptr(),
                1,
                b.as_ptr(),
                1,
                &[0.0, 0.0],
                c.as_mut_ptr(),
                1,
            );
        }
        assert_eq!(c, [[3.0, -6.0]]);
    }
}
