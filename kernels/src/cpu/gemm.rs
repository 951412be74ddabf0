//! Matrix products for the fused ops, on the engine that is fastest on this machine: the `gemm`
//! crate (what burn-flex uses) on rayon's threads, or the BLAS library the binary linked
//! (OpenBLAS) when it knows this processor.
//!
//! The gemm crate chooses its AVX-512 or AVX2 kernels from the processor and needs no system
//! library; on an Intel Xeon it beat OpenBLAS 0.3.21, which does not know that processor and runs
//! generic SSE3 kernels there. On an AMD EPYC (Zen 3), where OpenBLAS runs its Zen kernels, OpenBLAS
//! is 5-60% faster on the model's shapes (`cargo bench --bench matmul_engines`, BENCHMARKS.md).
//! So the binary registers its BLAS library ([`use_blas`]) with whether to prefer it on this
//! processor, and [`Engine::chosen`] takes it when so.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use gemm_common::Parallelism;
use rayon::prelude::*;

use super::{DisjointOutput, Float};

/// What runs the products on this processor, for the start-up banner.
pub fn engine() -> String {
    match blas().filter(|b| b.preferred) {
        Some(blas) => format!("{} on rayon", blas.name),
        None => gemm_crate().to_string(),
    }
}

fn gemm_crate() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "gemm crate, AVX-512";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "gemm crate, AVX2";
        }
    }
    "gemm crate"
}

/// `cblas_sgemm` / `cblas_dgemm`.
pub type CblasGemm<T> = unsafe extern "C" fn(
    layout: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: T,
    a: *const T,
    lda: i32,
    b: *const T,
    ldb: i32,
    beta: T,
    c: *mut T,
    ldc: i32,
);

/// A BLAS library the binary links, registered with [`use_blas`].
#[derive(Debug, Clone)]
pub struct Blas {
    /// How the banner names it (`OpenBLAS 0.3.21 Zen`).
    pub name: String,
    pub sgemm: CblasGemm<f32>,
    pub dgemm: CblasGemm<f64>,
    /// Sets the library's own thread count (`openblas_set_num_threads`).
    pub set_threads: fn(usize),
    /// Whether the products run on it rather than on the gemm crate: the binary decides, from
    /// what was measured on this kind of processor.
    pub preferred: bool,
}

static BLAS: OnceLock<Blas> = OnceLock::new();

/// Registers the BLAS library the products may run on (once; later calls are ignored). The
/// library runs one thread per call: parallel products split across rayon's threads.
pub fn use_blas(blas: Blas) {
    (blas.set_threads)(1);
    let _ = BLAS.set(blas);
}

fn blas() -> Option<&'static Blas> {
    BLAS.get()
}

/// An engine for one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The gemm crate on rayon's pool.
    GemmCrate,
    /// The registered BLAS library, the output cut across rayon's threads ([`Block::split`]),
    /// one BLAS thread each: the choice when BLAS is preferred (faster than the next, measured
    /// on the small and medium presets' steps, and no second thread pool beside rayon's).
    BlasOnRayon,
    /// The registered BLAS library with as many of its own threads as rayon has (for the
    /// benchmark's comparison).
    BlasThreads,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::GemmCrate => "gemm-crate",
            Engine::BlasOnRayon => "blas-on-rayon",
            Engine::BlasThreads => "blas-own-threads",
        }
    }

    /// The BLAS engines, when a library is registered.
    pub fn blas_variants() -> Vec<Engine> {
        match blas() {
            Some(_) => vec![Engine::BlasOnRayon, Engine::BlasThreads],
            None => Vec::new(),
        }
    }

    /// The engine for the model's products on this machine.
    pub fn chosen() -> Engine {
        match blas() {
            Some(blas) if blas.preferred => Engine::BlasOnRayon,
            _ => Engine::GemmCrate,
        }
    }
}

/// Products below this many multiply-adds run on the calling thread: handing them out costs
/// more than it gains.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// A row-major matrix read in place: `rows × cols` values of `values`, `ld` apart from row to
/// row, or its transpose when `transposed`.
#[derive(Clone, Copy)]
pub struct View<'a, E> {
    pub values: &'a [E],
    pub ld: usize,
    pub transposed: bool,
}

impl<'a, E> View<'a, E> {
    /// The matrix stored row-major in `values` with rows `ld` apart.
    pub fn rows(values: &'a [E], ld: usize) -> Self {
        Self {
            values,
            ld,
            transposed: false,
        }
    }

    /// The transpose of the matrix stored row-major in `values` with rows `ld` apart.
    pub fn transposed(values: &'a [E], ld: usize) -> Self {
        Self {
            values,
            ld,
            transposed: true,
        }
    }

    /// The logical matrix from row `row0` and column `col0` on.
    fn at(self, row0: usize, col0: usize) -> Self {
        let (cs, rs) = self.strides();
        let start = row0 as isize * rs + col0 as isize * cs;
        Self {
            values: &self.values[start as usize..],
            ..self
        }
    }

    /// Column and row strides of the logical (possibly transposed) matrix.
    fn strides(&self) -> (isize, isize) {
        let ld = self.ld as isize;
        if self.transposed { (ld, 1) } else { (1, ld) }
    }

    /// Checks that the logical `rows × cols` matrix lies inside `values`.
    fn check(&self, rows: usize, cols: usize) {
        let (stored_rows, stored_cols) = if self.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        if rows > 0 && cols > 0 {
            assert!(self.ld >= stored_cols);
            assert!(self.values.len() >= (stored_rows - 1) * self.ld + stored_cols);
        }
    }
}

/// How a product treats its output.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Destination {
    /// `c = a·b`: `c` may be uninitialized; every element is written.
    Overwrite,
    /// `c += a·b`: `c` must be initialized.
    Accumulate,
}

/// `c` (`m × n`, row-major, contiguous) `= a·b` or `+= a·b`, for `a` `m × k` and `b` `k × n`.
///
/// With [`Destination::Overwrite`] every element of `c` is written and none is read, so `c` may start
/// uninitialized: the gemm crate zeroes `alpha` when `read_dst` is false (gemm-common 0.19
/// `gemm_basic_generic`), writes zeros for `k = 0`, and its microkernels do not load the
/// destination when `alpha` is zero. That is its code, not its documented contract (which says
/// only `dst := alpha·dst + beta·lhs·rhs`), so `tests::overwrite_writes_every_element_and_reads_none`
/// pins it for the shapes the model uses. On BLAS, `beta = 0` is cblas's documented "C need not
/// be set on input".
pub fn matmul<E: Float>(
    shape: (usize, usize, usize),
    a: View<'_, E>,
    b: View<'_, E>,
    c: &mut [MaybeUninit<E>],
    into: Destination,
) {
    matmul_on(Engine::chosen(), shape, a, b, c, into);
}

/// [`matmul`] on the given engine (the benchmarks compare them). A BLAS engine without a
/// registered library runs on the gemm crate.
pub fn matmul_on<E: Float>(
    engine: Engine,
    (m, n, k): (usize, usize, usize),
    a: View<'_, E>,
    b: View<'_, E>,
    c: &mut [MaybeUninit<E>],
    into: Destination,
) {
    a.check(m, k);
    b.check(k, n);
    assert_eq!(c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    let threads = if m * n * k >= PARALLEL_MIN_MACS {
        rayon::current_num_threads()
    } else {
        1
    };
    let Some(library) = blas() else {
        return gemm_crate_product((m, n, k), a, b, c, into, threads);
    };
    match engine {
        Engine::GemmCrate => gemm_crate_product((m, n, k), a, b, c, into, threads),
        Engine::BlasOnRayon => {
            let output = DisjointOutput::new(c);
            Block::split((m, n), threads)
                .into_par_iter()
                .for_each(|part| {
                    // Each call writes its own block (`Block::split` gives disjoint blocks).
                    blas_product(library, (n, k), a, b, output.first(), part, into);
                });
        }
        Engine::BlasThreads => {
            (library.set_threads)(threads);
            let all = Block {
                row0: 0,
                rows: m,
                col0: 0,
                cols: n,
            };
            blas_product(library, (n, k), a, b, c.as_mut_ptr(), all, into);
            (library.set_threads)(1);
        }
    }
}

/// The block of an `m × n` product one call computes: `rows` rows from `row0`, `cols` columns
/// from `col0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    row0: usize,
    rows: usize,
    col0: usize,
    cols: usize,
}

impl Block {
    /// The `m × n` product cut into at most `parts` blocks, one per thread, across its rows or
    /// its columns. Each call packs its share of the split operand and all of the other, so the
    /// cut goes through the larger of `a` (`m × k`) and `b` (`k × n`): rows when `m >= n`, as
    /// in every forward product (`m` is the batch's rows); columns for the weight gradients of
    /// the layers that widen (`xᵀ·dy`, `d × 3d`, `d × 4d`) and for the output head's products
    /// at GPT-2's vocabulary, where cutting rows had each thread pack the whole 154 MB weight.
    fn split((m, n): (usize, usize), parts: usize) -> Vec<Block> {
        let across = |len: usize| {
            let size = len.div_ceil(parts.max(1));
            (0..len)
                .step_by(size.max(1))
                .map(move |start| (start, size.min(len - start)))
        };
        if m >= n {
            across(m)
                .map(|(row0, rows)| Block {
                    row0,
                    rows,
                    col0: 0,
                    cols: n,
                })
                .collect()
        } else {
            across(n)
                .map(|(col0, cols)| Block {
                    row0: 0,
                    rows: m,
                    col0,
                    cols,
                })
                .collect()
        }
    }
}

/// One cblas call for the `part` of the `m × n` product whose first element is `c` (row-major,
/// rows `n` apart).
fn blas_product<E: Float>(
    library: &Blas,
    (n, k): (usize, usize),
    a: View<'_, E>,
    b: View<'_, E>,
    c: *mut MaybeUninit<E>,
    part: Block,
    into: Destination,
) {
    const ROW_MAJOR: i32 = 101;
    // The first element of `a` the part reads (its first row), of `b` (its first column) and of
    // `c` (the block's corner).
    let a_start = if a.transposed {
        part.row0
    } else {
        part.row0 * a.ld
    };
    let b_start = if b.transposed {
        part.col0 * b.ld
    } else {
        part.col0
    };
    let c_start = part.row0 * n + part.col0;
    let trans = |v: &View<'_, E>| if v.transposed { 112 } else { 111 };
    let beta = match into {
        Destination::Overwrite => E::ZERO,
        Destination::Accumulate => E::ONE,
    };
    // SAFETY: `check` bounded both operands inside their slices and the caller `c` to the
    // `m × n` output; the part's block lies inside it and is written by this call alone. With
    // beta = 0 cblas does not read `c` ("C need not be set on input"), so it may be
    // uninitialized; with beta = 1 the caller initialized it.
    unsafe {
        E::cblas(library)(
            ROW_MAJOR,
            trans(&a),
            trans(&b),
            part.rows as i32,
            part.cols as i32,
            k as i32,
            E::ONE,
            a.values.as_ptr().add(a_start),
            a.ld as i32,
            b.values.as_ptr().add(b_start),
            b.ld as i32,
            beta,
            c.add(c_start).cast::<E>(),
            n as i32,
        )
    }
}

/// Depth (the shared dimension `k`) of one part of a deep product: see [`depth_chunks`].
const DEPTH_CHUNK: usize = 1024;

/// Into how many parts of at least [`DEPTH_CHUNK`] the gemm crate's product cuts its depth, each
/// part computed on its own thread and the parts summed: 1 for most products. The weight
/// gradients `xᵀ·dy` of the small and medium presets are deep and narrow (`128 × 2048 × 384`: the
/// batch's 2048 rows are the depth), and the gemm crate, which cuts only the output across
/// threads, left each thread too little of it: on two cores that product ran 1.1x faster than on
/// one where the wide products ran 1.6-1.9x. Cut along the depth it ran 1.3x faster than before
/// on two cores, the medium preset's `256 × 2048 × 1024` 1.07x (`cargo bench --bench
/// matmul_engines`, BENCHMARKS.md). The cut depends on the shape alone, never on the thread
/// count, so a product sums in the same order on any machine. The count is a power of two, so
/// that the parts share out evenly over two (or four, ...) threads: GPT-2's `256 × 3072 × 768`
/// products at batch 4 x context 64 were cut in three, one thread computed two parts while the
/// other waited, and two parts ran them 1.2-1.35x faster. The BLAS engines keep their own
/// split ([`Block::split`]): the processors that prefer them (AMD Zen) were not at hand to
/// measure a cut there.
fn depth_chunks((m, n, k): (usize, usize, usize)) -> usize {
    if m * n * k < PARALLEL_MIN_MACS || k < 2 * m.max(n) {
        return 1;
    }
    let chunks = (k / DEPTH_CHUNK).max(1);
    1 << chunks.ilog2()
}

/// The most rows of a product [`through_transposes`] reorients.
const SHORT_ROWS: usize = 256;
/// The most values of `a` [`through_transposes`] copies (4 MiB in `f32`).
const MOST_COPIED: usize = 1 << 20;

/// Whether the gemm crate computes `a·b` faster as `(bᵀ·aᵀ)ᵀ` with `aᵀ` copied out first: for
/// products of few rows, deep against their width, whose `b` is read transposed (a Linear
/// layer's input gradient `dy·Wᵀ` at GPT-2's batch 4 x context 64: `256 × 2304 × 768` and
/// `256 × 3072 × 768`). Read as they are, the gemm crate's packed left operand is `b`'s stored
/// rows, which it packs by transposing them: those two products ran at 221-262 GFLOP/s where the
/// same shapes with `b` untransposed ran at 289-345; through the copies (`aᵀ` and the output,
/// small here) at 254-332. The rule leaves out what measured no better: 2048 rows (medium's
/// `dy·Wᵀ` 343-373 GFLOP/s read in place, 218-248 through the copies), `256 × 768 × 3072` (not
/// deep), and copies of `a` over [`MOST_COPIED`] (the untied GPT-2 head's `256 × 50304` gradient:
/// 255-286 in place, 220-231 through a 51 MB copy). A throwaway `matmul_on` timer, medians of 11,
/// interleaved runs; BENCHMARKS.md.
fn through_transposes<E>((m, n, k): (usize, usize, usize), a: View<'_, E>, b: View<'_, E>) -> bool {
    !a.transposed
        && b.transposed
        && m <= SHORT_ROWS
        && k >= 2 * n
        && m * k <= MOST_COPIED
        && m * n * k >= PARALLEL_MIN_MACS
}

/// Side of the square tiles [`transpose_into`] copies, so that both its reads and its writes
/// stay within a few cache lines per row.
const TILE: usize = 64;

/// `dst` (`cols × rows`, contiguous) `=` or `+=` the transpose of `src` (`rows × cols`, rows `ld`
/// apart), in tiles, on rayon's threads. With [`Destination::Overwrite`] every element of `dst`
/// is written and none read.
fn transpose_into<E: Float>(
    src: &[E],
    (rows, cols, ld): (usize, usize, usize),
    dst: &mut [MaybeUninit<E>],
    into: Destination,
) {
    assert_eq!(dst.len(), rows * cols);
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(tile, out)| {
            let c0 = tile * TILE;
            for r0 in (0..rows).step_by(TILE) {
                for (o, c) in out.chunks_exact_mut(rows).zip(c0..) {
                    for (o, r) in o[r0..(r0 + TILE).min(rows)].iter_mut().zip(r0..) {
                        let v = src[r * ld + c];
                        o.write(match into {
                            Destination::Overwrite => v,
                            // SAFETY: `Accumulate` asks for an initialized `dst`.
                            Destination::Accumulate => (unsafe { o.assume_init() }) + v,
                        });
                    }
                }
            }
        });
}

/// The product on the gemm crate on `threads` of rayon's threads: a short deep one with a
/// transposed `b` through transposed copies ([`through_transposes`]), a deep one cut along its
/// depth ([`depth_chunks`]), a single row cut across its columns ([`single_row_product`]).
fn gemm_crate_product<E: Float>(
    (m, n, k): (usize, usize, usize),
    a: View<'_, E>,
    b: View<'_, E>,
    c: &mut [MaybeUninit<E>],
    into: Destination,
    threads: usize,
) {
    if through_transposes((m, n, k), a, b) {
        let mut a_t = Box::new_uninit_slice(k * m);
        transpose_into(a.values, (m, k, a.ld), &mut a_t, Destination::Overwrite);
        // SAFETY: `transpose_into` wrote every element (`Overwrite`).
        let a_t = unsafe { a_t.assume_init() };
        let mut c_t = Box::new_uninit_slice(n * m);
        // `bᵀ` is `b`'s stored rows read as they are; `c_t = bᵀ·aᵀ`, `n × m`, not reoriented
        // again (its left operand is not transposed).
        let b_t = View::rows(b.values, b.ld);
        gemm_crate_product(
            (n, m, k),
            b_t,
            View::rows(&a_t, m),
            &mut c_t,
            Destination::Overwrite,
            threads,
        );
        // SAFETY: the product wrote every element (`Overwrite`).
        let c_t = unsafe { c_t.assume_init() };
        transpose_into(&c_t, (n, m, m), c, into);
        return;
    }
    let chunks = depth_chunks((m, n, k));
    if chunks > 1 {
        // The first part into `c` itself, the others into scratch outputs, added to `c` in
        // order once all are done. Each part is one call: less than twice [`DEPTH_CHUNK`] deep,
        // it would not be cut again, and [`through_transposes`] was decided for the whole
        // product (a part of the untied head's gradient is short and deep enough for copies the
        // whole was measured slower with).
        let size = k.div_ceil(chunks);
        let threads_per_part = (threads / chunks).max(1);
        let mut partials: Vec<Box<[MaybeUninit<E>]>> =
            (1..chunks).map(|_| Box::new_uninit_slice(m * n)).collect();
        let outputs = std::iter::once((&mut *c, into)).chain(
            partials
                .iter_mut()
                .map(|p| (&mut **p, Destination::Overwrite)),
        );
        let parts: Vec<_> = (0..k).step_by(size).zip(outputs).collect();
        parts.into_par_iter().for_each(|(p0, (out, into))| {
            let depth = size.min(k - p0);
            let (a, b) = (a.at(0, p0), b.at(p0, 0));
            gemm_crate_call((m, n, depth), a, b, out, into, threads_per_part);
        });
        // SAFETY: each product above wrote every element of its output (`Overwrite`) or added to
        // the caller's initialized `c` (`Accumulate`), so all of them hold initialized values, and
        // `MaybeUninit<E>` has `E`'s layout.
        let partials: Vec<&[E]> = partials
            .iter()
            .map(|p| unsafe { &*(std::ptr::from_ref(&**p) as *const [E]) })
            .collect();
        // SAFETY: as above.
        let c = unsafe { &mut *(std::ptr::from_mut(c) as *mut [E]) };
        // The parts added to a task's rows one whole part at a time: each element gets the same
        // additions in the same order as a fold over the parts element by element, in loops the
        // compiler vectorizes, which that fold (an index into each part per element) was not:
        // the sum of two `1024 × 256` parts took 205 us, now 45 (a throwaway timer, medians of
        // 200, two threads, AVX-512 Xeon); GPT-2's 32 parts of its head's `dx` at batch 4 x 64,
        // 1.96 ms, now 0.51.
        const ROWS_PER_TASK: usize = 64;
        c.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(task, rows)| {
                let start = task * ROWS_PER_TASK * n;
                for part in &partials {
                    let part = &part[start..start + rows.len()];
                    for (out, &p) in rows.iter_mut().zip(part) {
                        *out += p;
                    }
                }
            });
        return;
    }
    if m == 1 && threads > 1 {
        return single_row_product((n, k), a, b, c, into, threads);
    }
    gemm_crate_call((m, n, k), a, b, c, into, threads);
}

/// Columns of a [`single_row_product`]'s blocks but its last are a multiple of this: of every
/// vector width the gemm crate uses (16 `f32` lanes on AVX-512, 8 on AVX2, fewer for `f64`).
const SINGLE_ROW_BLOCK: usize = 64;

/// Fewest columns in a block of a [`single_row_product`] (a multiple of [`SINGLE_ROW_BLOCK`]): the
/// gemm crate computes a product of at most 256 outputs with another kernel, which sums in
/// another order (gemm-common 0.19 `gemm_basic_generic`, `m·n <= 16·16`).
const SINGLE_ROW_MIN_COLS: usize = 320;

/// A product of one row (`1 × n`, each generated token's layers): the gemm crate computes it as a
/// matrix-vector product on the calling thread whatever parallelism it is given (gemm-common 0.19
/// `gemm_basic_generic`), reading all of `b` (a whole weight) on one core. Cut into one block of
/// columns per thread instead, each reads `b`'s columns for its own outputs. Every block is one
/// call of the same matrix-vector kernel (at least [`SINGLE_ROW_MIN_COLS`] wide), and all but the
/// last are whole multiples of [`SINGLE_ROW_BLOCK`], so the columns it computes in vector lanes
/// and the few it leaves to scalar code are those of one call: every output is the same number on
/// any thread count.
fn single_row_product<E: Float>(
    (n, k): (usize, usize),
    a: View<'_, E>,
    b: View<'_, E>,
    c: &mut [MaybeUninit<E>],
    into: Destination,
    threads: usize,
) {
    let parts = threads.min(n / SINGLE_ROW_MIN_COLS);
    if parts < 2 {
        return gemm_crate_call((1, n, k), a, b, c, into, 1);
    }
    let cols = n / parts / SINGLE_ROW_BLOCK * SINGLE_ROW_BLOCK;
    let (whole, last) = c.split_at_mut((parts - 1) * cols);
    let blocks: Vec<_> = whole
        .chunks_mut(cols)
        .chain(std::iter::once(last))
        .enumerate()
        .collect();
    blocks.into_par_iter().for_each(|(part, c)| {
        gemm_crate_call((1, c.len(), k), a, b.at(0, part * cols), c, into, 1);
    });
}

/// One call of the gemm crate's kernels for the whole product, on `threads` of rayon's threads.
fn gemm_crate_call<E: Float>(
    (m, n, k): (usize, usize, usize),
    a: View<'_, E>,
    b: View<'_, E>,
    c: &mut [MaybeUninit<E>],
    into: Destination,
    threads: usize,
) {
    let parallelism = match threads {
        0 | 1 => Parallelism::None,
        threads => Parallelism::Rayon(threads),
    };
    let ((a_cs, a_rs), (b_cs, b_rs)) = (a.strides(), b.strides());
    // gemm's kernels want a column-major destination; `c` is row-major, so they compute
    // `cᵀ = bᵀ·aᵀ` (what the `gemm` facade crate does before calling them).
    // SAFETY: `check` bounds both operands inside their slices, `c` is exactly `m × n`, and
    // `c` does not alias `a` or `b` (it is borrowed mutably). With `read_dst` false gemm writes
    // every element of `c` without reading it (see above), so `c` may start uninitialized;
    // with it true the caller initialized `c`.
    unsafe {
        E::gemm()(
            n,
            m,
            k,
            c.as_mut_ptr().cast::<E>(),
            n as isize,
            1,
            into == Destination::Accumulate,
            b.values.as_ptr(),
            b_rs,
            b_cs,
            a.values.as_ptr(),
            a_rs,
            a_cs,
            E::ONE,
            E::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + seed) * 0.61).sin()).collect()
    }

    /// The transpose of the row-major `rows × cols` matrix `x`, stored `cols × rows`.
    fn transpose(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
        (0..rows * cols)
            .map(|i| x[(i % rows) * cols + i / rows])
            .collect()
    }

    /// `f` on a pool of `threads` of rayon's threads.
    fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(f)
    }

    /// Whether `x` and `y` hold the same numbers bit for bit.
    fn same_bits<E: Float>(x: &[E], y: &[E]) -> bool {
        x.len() == y.len()
            && x.iter()
                .zip(y)
                .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits())
    }

    /// `a·b` in plain loops.
    fn reference((m, n, k): (usize, usize, usize), a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    /// Every engine this build has: the gemm crate, and the linked BLAS library's (registered
    /// here whatever the processor, so that its path is tested everywhere).
    fn engines() -> Vec<Engine> {
        if let Some(p) = ember_blas::products() {
            use_blas(Blas {
                name: "test".into(),
                sgemm: p.sgemm,
                dgemm: p.dgemm,
                set_threads: |n| {
                    ember_blas::set_threads(n);
                },
                preferred: true,
            });
        }
        let mut all = vec![Engine::GemmCrate];
        all.extend(Engine::blas_variants());
        all
    }

    /// What `matmul`'s SAFETY comments rely on, for every engine: with `Overwrite`, a destination
    /// full of NaN comes out holding exactly the product (NaN would survive or spread if the
    /// engine read it), for the gemm crate's small-product path (m·n <= 16·16), its blocked one,
    /// the parallel products (m·n·k >= 2^18, split across rayon by rows or, when wider than
    /// tall, by columns), a deep product cut along its depth, odd sizes, and k = 0 (zeros).
    #[test]
    fn overwrite_writes_every_element_and_reads_none() {
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (16, 16, 4),
            (17, 33, 9),
            (64, 128, 0),
            (130, 70, 65),
            (300, 257, 129),
            (70, 300, 129),
            (2048, 128, 64),
            (20, 30, 4500),
        ];
        for engine in engines() {
            for shape @ (m, n, k) in shapes {
                let (a, b) = (values(m * k, 1.0), values(k * n, 2.0));
                let want = reference(shape, &a, &b);
                for (got, tolerance, what) in [
                    (overwrite::<f32>(engine, shape, &a, &b), 1e-4, "f32"),
                    (overwrite::<f64>(engine, shape, &a, &b), 1e-10, "f64"),
                ] {
                    let tolerance = tolerance * (k as f64).max(1.0);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= tolerance,
                            "{engine:?} {shape:?} {what}: element {i} is {g}, the product is {w}"
                        );
                    }
                }
            }
        }
    }

    /// `a·b` by [`matmul_on`] in `E` with [`Destination::Overwrite`] into a destination full of NaN.
    fn overwrite<E: Float>(
        engine: Engine,
        shape: (usize, usize, usize),
        a: &[f64],
        b: &[f64],
    ) -> Vec<f64> {
        let (m, n, k) = shape;
        let to_e = |v: &[f64]| -> Vec<E> { v.iter().map(|&x| E::from_f64(x)).collect() };
        let (a, b) = (to_e(a), to_e(b));
        let mut c = vec![MaybeUninit::new(E::from_f64(f64::NAN)); m * n];
        let (a, b) = (View::rows(&a, k), View::rows(&b, n));
        matmul_on(engine, shape, a, b, &mut c, Destination::Overwrite);
        // SAFETY: initialized above (with NaN).
        c.iter()
            .map(|v| unsafe { v.assume_init() }.to_f64())
            .collect()
    }

    #[test]
    fn blocks_cover_every_element_once_and_cut_the_longer_side() {
        for (m, n) in [
            (1, 1),
            (7, 3),
            (3, 7),
            (2048, 768),
            (256, 50304),
            (301, 301),
        ] {
            for parts in [1, 2, 3, 16] {
                let blocks = Block::split((m, n), parts);
                assert!(blocks.len() <= parts, "{m}x{n} in {parts}: {blocks:?}");
                let mut seen = vec![0u8; m * n];
                for b in &blocks {
                    assert!(b.rows == m || b.cols == n, "one side stays whole: {b:?}");
                    for i in b.row0..b.row0 + b.rows {
                        for j in b.col0..b.col0 + b.cols {
                            seen[i * n + j] += 1;
                        }
                    }
                }
                assert!(seen.iter().all(|&s| s == 1), "{m}x{n} in {parts}");
                let cut_rows = blocks.iter().all(|b| b.cols == n);
                assert!(parts == 1 || blocks.len() == 1 || cut_rows == (m >= n));
            }
        }
    }

    #[test]
    fn accumulate_adds_to_the_destination_and_transposed_views_read_in_place() {
        // Large enough to be split across threads (by rows, then by columns, then along the
        // depth in two parts and in eight), with odd sizes.
        for (m, n, k) in [
            (37, 45, 19),
            (301, 129, 67),
            (129, 301, 67),
            (40, 24, 3100),
            (20, 30, 9000),
        ] {
            let (a, b) = (values(m * k, 3.0), values(k * n, 4.0));
            // aᵀ stored as k × m, bᵀ as n × k.
            let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
            let want = reference((m, n, k), &a, &b);
            for engine in engines() {
                let mut c: Vec<MaybeUninit<f64>> =
                    (0..m * n).map(|i| MaybeUninit::new(i as f64)).collect();
                let views = (View::transposed(&at, m), View::transposed(&bt, k));
                matmul_on(
                    engine,
                    (m, n, k),
                    views.0,
                    views.1,
                    &mut c,
                    Destination::Accumulate,
                );
                for (i, (c, w)) in c.iter().zip(&want).enumerate() {
                    // SAFETY: initialized above.
                    let c = unsafe { c.assume_init() };
                    assert!((c - (w + i as f64)).abs() < 1e-9, "{engine:?} element {i}");
                }
            }
        }
    }

    #[test]
    fn short_deep_products_with_b_transposed_go_through_transposed_copies() {
        let picks = |(m, n, k): (usize, usize, usize), b_transposed: bool| {
            let empty: &[f64] = &[];
            let b = View {
                values: empty,
                ld: if b_transposed { k } else { n },
                transposed: b_transposed,
            };
            through_transposes((m, n, k), View::rows(empty, k), b)
        };
        // GPT-2's input gradients at 4 x 64 rows; not 2048 rows, not an untransposed `b`, not the
        // untied head's 51 MB `a`, not a product as wide as it is deep.
        assert!(picks((256, 768, 2304), true));
        assert!(picks((256, 768, 3072), true));
        assert!(!picks((2048, 768, 2304), true));
        assert!(!picks((256, 768, 2304), false));
        assert!(!picks((256, 768, 50304), true));
        assert!(!picks((256, 3072, 768), true));
        // Odd sizes crossing the copies' 64-wide tiles, `a`'s rows wider apart than its columns,
        // one product also cut along its depth; both destinations against the plain loops.
        for (m, n, k) in [(37, 20, 900), (200, 65, 2100), (130, 70, 3000)] {
            let ld = k + 3;
            let (a, b) = (values(m * k, 7.0), values(k * n, 8.0));
            let mut a_wide = vec![f64::NAN; m * ld];
            for (wide, row) in a_wide.chunks_exact_mut(ld).zip(a.chunks_exact(k)) {
                wide[..k].copy_from_slice(row);
            }
            // bᵀ stored as n × k.
            let bt = transpose(&b, k, n);
            let (av, bv) = (View::rows(&a_wide, ld), View::transposed(&bt, k));
            assert!(through_transposes((m, n, k), av, bv), "{m}x{n}x{k}");
            let want = reference((m, n, k), &a, &b);
            for into in [Destination::Overwrite, Destination::Accumulate] {
                let mut c: Vec<MaybeUninit<f64>> =
                    (0..m * n).map(|i| MaybeUninit::new(i as f64)).collect();
                matmul_on(Engine::GemmCrate, (m, n, k), av, bv, &mut c, into);
                let before = |i: usize| match into {
                    Destination::Overwrite => 0.0,
                    Destination::Accumulate => i as f64,
                };
                for (i, (c, w)) in c.iter().zip(&want).enumerate() {
                    // SAFETY: initialized above.
                    let c = unsafe { c.assume_init() };
                    let err = (c - (w + before(i))).abs();
                    assert!(
                        err < 1e-9,
                        "{m}x{n}x{k} {into:?} element {i}: off by {err:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn single_rows_are_cut_across_columns_and_the_same_on_any_thread_count() {
        // A generated token's products: `b` stored as it is (a Linear layer's `[in, out]`
        // weight) and transposed (`[out, in]`, a tied head's table); odd widths whose last
        // block is the longest and whose last columns the gemm crate leaves to scalar code,
        // cut in two and in three; one too narrow to cut; one deep enough to be cut along its
        // depth instead.
        for (n, k) in [(2305, 300), (1000, 700), (600, 500), (50, 6000)] {
            let (a, b) = (values(k, 9.0), values(k * n, 10.0));
            let bt = transpose(&b, k, n);
            let want = reference((1, n, k), &a, &b);
            let to_f32 = |v: &[f64]| -> Vec<f32> { v.iter().map(|&x| x as f32).collect() };
            let (a32, b32, bt32) = (to_f32(&a), to_f32(&b), to_f32(&bt));
            for transposed in [false, true] {
                for into in [Destination::Overwrite, Destination::Accumulate] {
                    let on = |threads: usize| {
                        let start = |i: usize| match into {
                            Destination::Overwrite => f32::NAN,
                            Destination::Accumulate => i as f32,
                        };
                        let mut c: Vec<MaybeUninit<f32>> =
                            (0..n).map(|i| MaybeUninit::new(start(i))).collect();
                        let bv = if transposed {
                            View::transposed(&bt32, k)
                        } else {
                            View::rows(&b32, n)
                        };
                        on_threads(threads, || {
                            let av = View::rows(&a32, k);
                            matmul_on(Engine::GemmCrate, (1, n, k), av, bv, &mut c, into)
                        });
                        // SAFETY: initialized above.
                        c.iter()
                            .map(|v| unsafe { v.assume_init() })
                            .collect::<Vec<f32>>()
                    };
                    let one = on(1);
                    let before = |i: usize| match into {
                        Destination::Overwrite => 0.0,
                        Destination::Accumulate => i as f64,
                    };
                    for (i, (&g, w)) in one.iter().zip(&want).enumerate() {
                        let want = w + before(i);
                        let err = (g as f64 - want).abs();
                        // f32 rounding: of `k` products, and of the value accumulated onto.
                        let tolerance = 1e-5 * (k as f64 + want.abs());
                        assert!(
                            err < tolerance,
                            "1x{n}x{k} {into:?} element {i}: off by {err:e}"
                        );
                    }
                    for threads in [2, 3] {
                        assert!(
                            same_bits(&one, &on(threads)),
                            "1x{n}x{k} (b transposed: {transposed}, {into:?}): {threads} threads \
                             differ from one"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn deep_narrow_products_are_cut_along_their_depth_and_sum_the_same_on_any_thread_count() {
        // The weight gradients of the small and medium presets are cut, in a power of two of
        // parts; GPT-2's widening layers, the forward products and small products are not.
        assert_eq!(depth_chunks((128, 384, 2048)), 2);
        assert_eq!(depth_chunks((256, 1024, 2048)), 2);
        assert_eq!(depth_chunks((20, 30, 4500)), 4);
        assert_eq!(depth_chunks((20, 30, 9000)), 8);
        // Powers of two: GPT-2's deepest products at 4 x 64 rows, its head's input gradient.
        assert_eq!(depth_chunks((256, 768, 3072)), 2);
        assert_eq!(depth_chunks((256, 768, 50304)), 32);
        assert_eq!(depth_chunks((768, 3072, 2048)), 1);
        assert_eq!(depth_chunks((2048, 768, 256)), 1);
        assert_eq!(depth_chunks((4, 4, 4096)), 1);
        // A deep product, and a wide one (cut across its output), on the gemm crate.
        for (m, n, k) in [(40, 24, 3100), (20, 30, 9000), (300, 257, 129)] {
            let (a, b) = (values(m * k, 5.0), values(k * n, 6.0));
            let on = |threads| {
                on_threads(threads, || {
                    overwrite::<f32>(Engine::GemmCrate, (m, n, k), &a, &b)
                })
            };
            let one = on(1);
            for threads in [2, 3] {
                assert!(
                    same_bits(&one, &on(threads)),
                    "{m}x{n}x{k}: {threads} threads sum differently from one"
                );
            }
        }
    }
}
