//! Which ranks this process trains with: alone, or with the processes an MPI launcher
//! (`mpirun`, `mpiexec`, `srun`) started beside it, joined over MPI in a build with the `mpi`
//! feature ([`ember_train::cluster`] is what they do together).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ember_train::StepHooks;
use ember_train::cluster::{Collective, Solo};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::{Error, Result};

/// The ranks this process joined.
pub struct Joined {
    pub collective: Arc<dyn Collective>,
    /// Ranks on this machine (this one included), which share its cores.
    pub ranks_here: usize,
}

impl Joined {
    /// `--threads` of one rank: as asked, or (0) this machine's cores shared out among the
    /// ranks on it.
    pub fn threads(&self, requested: usize) -> usize {
        match (requested, self.ranks_here) {
            (0, 1) => 0,
            (0, here) => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                (cores / here).max(1)
            }
            (n, _) => n,
        }
    }

    /// Lets only rank 0 print: the other ranks' standard output goes to /dev/null, so that
    /// every `println!` of the run (the banner, progress, the summary) is said once. Errors
    /// (standard error) are still each rank's own.
    pub fn quiet_unless_root(&self) {
        if self.collective.is_root() {
            return;
        }
        crate::console::silence_stdout();
    }

    /// Runs `f`, this rank's part of the job. Among several ranks, an error ends the whole job
    /// here, after its line (with the rank) on stderr: the other ranks would otherwise wait for
    /// this one in their next collective forever.
    pub fn run<T, E: std::fmt::Display>(
        &self,
        f: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let result = f();
        if let Err(e) = &result
            && self.collective.size() > 1
        {
            eprintln!("error: rank {}: {e:#}", self.collective.rank());
            self.collective.abort(1);
        }
        result
    }
}

/// Rank 0's one line when a job of several ranks is stopped by a signal (a launcher ending the
/// job because another rank died, Ctrl-C, a scheduler's SIGTERM): what happens next and the
/// command that continues. The launcher's own message names a rank that died; rank 0 itself
/// may then be stuck in a collective, waiting for it, until the launcher kills it.
pub struct StopNotice {
    state: Arc<Mutex<NoticeState>>,
}

struct NoticeState {
    step: usize,
    checkpoint: Option<PathBuf>,
    run_dir: PathBuf,
}

impl Joined {
    /// The [`StopNotice`] of a run in `run_dir` whose last checkpoint so far is `checkpoint`:
    /// listening on rank 0 of several ranks, silent otherwise.
    pub fn stop_notice(
        &self,
        run_dir: &Path,
        checkpoint: Option<PathBuf>,
    ) -> std::io::Result<StopNotice> {
        let state = Arc::new(Mutex::new(NoticeState {
            step: 0,
            checkpoint,
            run_dir: run_dir.to_path_buf(),
        }));
        if self.collective.size() > 1 && self.collective.is_root() {
            let mut signals = Signals::new([SIGTERM, SIGINT])?;
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                for signal in signals.forever() {
                    let s = state.lock().unwrap_or_else(|e| e.into_inner());
                    let name = if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    let last = match &s.checkpoint {
                        Some(path) => format!("the last checkpoint, {}, is kept", path.display()),
                        None => "no checkpoint was saved yet".to_string(),
                    };
                    eprintln!(
                        "note: rank 0: {name} during step {}: if every rank is still running, the run stops after this step with a checkpoint; \
                         if a rank died (the launcher names it), {last}; continue with: mpirun ... train --resume {}",
                        s.step,
                        s.run_dir.display()
                    );
                }
            });
        }
        Ok(StopNotice { state })
    }
}

impl StepHooks for StopNotice {
    fn begin_step(&mut self, step: usize) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).step = step;
    }

    fn on_checkpoint(&mut self, _step: usize, path: &Path) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .checkpoint = Some(path.to_path_buf());
    }
}

/// Joins the ranks of this job: MPI's when a launcher started this process (and the build has
/// the `mpi` feature), else this process alone. A launcher's job of several processes in a build
/// without MPI is refused: each would train alone, N copies of one run.
pub fn join() -> Result<Joined> {
    match launched_as() {
        None => Ok(Joined {
            collective: Arc::new(Solo),
            ranks_here: 1,
        }),
        Some(launch) => join_launched(launch),
    }
}

/// What the launcher told this process in its environment.
#[derive(Debug, Clone, PartialEq)]
struct Launch {
    /// The variable that says so, as `NAME=value`.
    evidence: String,
    /// Processes in the job, when the launcher says (PMIx does not).
    size: Option<usize>,
}

/// The job this process was started in by an MPI launcher, if it was: OpenMPI's `mpirun`,
/// MPICH's Hydra (PMI), or Slurm's `srun` (PMI-2 or PMIx).
fn launched_as() -> Option<Launch> {
    launched_from(|name| std::env::var(name).ok())
}

fn launched_from(var: impl Fn(&str) -> Option<String>) -> Option<Launch> {
    for name in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"] {
        if let Some(value) = var(name) {
            return Some(Launch {
                evidence: format!("{name}={value}"),
                size: value.trim().parse().ok(),
            });
        }
    }
    var("PMIX_RANK").map(|value| Launch {
        evidence: format!("PMIX_RANK={value}"),
        size: None,
    })
}

#[cfg(not(feature = "mpi"))]
fn join_launched(launch: Launch) -> Result<Joined> {
    match launch.size {
        Some(1) => Ok(Joined {
            collective: Arc::new(Solo),
            ranks_here: 1,
        }),
        _ => Err(Error::Cluster(format!(
            "this process was started by an MPI launcher ({}) but this build of Ember has no MPI, \
             so every process would train alone; rebuild with `cargo build --release --features mpi` \
             (it needs an MPI library and libclang: apt install openmpi-bin libopenmpi-dev libclang-dev), \
             or run one process without the launcher",
            launch.evidence
        ))),
    }
}

#[cfg(feature = "mpi")]
fn join_launched(launch: Launch) -> Result<Joined> {
    let mpi = mpi_ranks::Mpi::initialize().map_err(|why| {
        Error::Cluster(format!(
            "started by an MPI launcher ({}), but MPI did not start: {why}",
            launch.evidence
        ))
    })?;
    let ranks_here = mpi.ranks_here();
    Ok(Joined {
        collective: Arc::new(mpi),
        ranks_here,
    })
}

#[cfg(feature = "mpi")]
mod mpi_ranks {
    //! [`Collective`] over MPI (rsmpi).

    use std::sync::Mutex;

    use ember_train::cluster::Collective;
    use mpi::collective::SystemOperation;
    use mpi::datatype::Equivalence;
    use mpi::environment::{Threading, Universe};
    use mpi::traits::{Communicator, CommunicatorCollectives};

    /// This process's MPI: initialized for calls from any one thread at a time (the trainer runs
    /// on a worker thread of rayon's pool), which `calls` serializes; finalized when dropped.
    pub struct Mpi {
        universe: Universe,
        calls: Mutex<()>,
        rank: usize,
        size: usize,
    }

    impl Mpi {
        pub fn initialize() -> Result<Self, String> {
            let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
                .ok_or("MPI was initialized already")?;
            if threading < Threading::Serialized {
                return Err(format!(
                    "the MPI library gives {threading:?} threading, and Ember needs Serialized (calls from one thread at a time)"
                ));
            }
            let world = universe.world();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            Ok(Self {
                universe,
                calls: Mutex::new(()),
                rank,
                size,
            })
        }

        /// Replaces `values` by their sum over the ranks. rsmpi's all-reduce takes separate
        /// buffers (no MPI_IN_PLACE): the copy is at most one bucket of gradients.
        fn sum<T: Equivalence + Clone>(&self, values: &mut [T]) {
            let _one = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            let send = values.to_vec();
            self.universe
                .world()
                .all_reduce_into(&send[..], values, SystemOperation::sum());
        }

        /// Ranks that share this machine's memory (and cores), this one included.
        pub fn ranks_here(&self) -> usize {
            let _one = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            let world = self.universe.world();
            world.split_shared(world.rank()).size() as usize
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn sum_f32(&self, values: &mut [f32]) {
            self.sum(values);
        }

        fn sum_f64(&self, values: &mut [f64]) {
            self.sum(values);
        }

        fn gather_u64(&self, value: u64) -> Vec<u64> {
            let _one = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            let mut all = vec![0u64; self.size];
            self.universe.world().all_gather_into(&value, &mut all[..]);
            all
        }

        fn abort(&self, code: i32) -> ! {
            self.universe.world().abort(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn launchers_are_recognized_by_their_environment() {
        assert_eq!(launched_from(env(&[("HOME", "/root")])), None);
        let open_mpi = launched_from(env(&[("OMPI_COMM_WORLD_SIZE", "4")])).unwrap();
        assert_eq!(open_mpi.size, Some(4));
        assert_eq!(open_mpi.evidence, "OMPI_COMM_WORLD_SIZE=4");
        assert_eq!(
            launched_from(env(&[("PMI_SIZE", "2")])).unwrap().size,
            Some(2)
        );
        assert_eq!(
            launched_from(env(&[("PMIX_RANK", "0")])).unwrap().size,
            None
        );
        // sbatch's own environment (SLURM_NTASKS without a step) is not a launch.
        assert_eq!(launched_from(env(&[("SLURM_NTASKS", "8")])), None);
    }

    #[test]
    fn threads_are_shared_out_among_the_ranks_of_a_machine() {
        let joined = |ranks_here| Joined {
            collective: Arc::new(Solo),
            ranks_here,
        };
        assert_eq!(joined(1).threads(0), 0);
        assert_eq!(joined(2).threads(3), 3);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(joined(2).threads(0), (cores / 2).max(1));
    }
}
