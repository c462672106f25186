//! Procfs reads off the thread that drains the ring buffer.
//!
//! Reading `/proc/<pid>/{cmdline,environ,exe}` for a new process takes tens of microseconds
//! to milliseconds; done inline it stalls the ring buffer. The pipeline [`submit`]s a [`Job`] when
//! a record arrives (before it is held for ordering, so the answer is usually back before the
//! record is processed) and applies each [`Done`] when it comes. Both channels are bounded;
//! a job that does not fit is refused (the caller then does the read inline, counted), and the
//! worker, not the pipeline, waits when answers are not collected.
//!
//! [`submit`]: ProcWorker::submit

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use super::{load_resource_selected, Loaded, ProcessTraits};
use crate::conn::comm_text;
use crate::span::model::Resource;

/// Jobs waiting for the worker; beyond this `submit` refuses.
const QUEUE: usize = 1024;

/// A request for the resource of process `pid` (`comm` names it if it is already gone). `id`
/// pairs the answer with this request (pids are reused).
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub id: u64,
    pub pid: u32,
    pub comm: [u8; 16],
}

/// The answer to the [`Job`] of the same `id`.
#[derive(Debug)]
pub struct Done {
    pub id: u64,
    pub pid: u32,
    pub resource: Arc<Resource>,
    pub traits: ProcessTraits,
    /// False for a process that was gone with nothing to name it by: not worth caching.
    pub cacheable: bool,
}

/// The worker thread's ends of the two channels.
pub struct ProcWorker {
    jobs: SyncSender<Job>,
    done: Receiver<Done>,
}

impl ProcWorker {
    /// Starts the worker thread; it ends when this handle is dropped.
    pub fn spawn(host_name: String, proc_root: PathBuf) -> std::io::Result<Self> {
        Self::spawn_with(host_name, proc_root, None)
    }

    /// Like [`Self::spawn`], the resources carrying pod metadata from `k8s` (read here, on
    /// the worker thread, not on the ring-buffer one).
    pub fn spawn_with(
        host_name: String,
        proc_root: PathBuf,
        k8s: Option<super::k8s::K8sView>,
    ) -> std::io::Result<Self> {
        Self::spawn_selected(host_name, proc_root, k8s, None)
    }

    /// Like [`Self::spawn_with`], each process's traced protocols decided by `selection`.
    pub fn spawn_selected(
        host_name: String,
        proc_root: PathBuf,
        k8s: Option<super::k8s::K8sView>,
        selection: Option<crate::selection::SelectionHandle>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let (tx, done) = sync_channel::<Done>(QUEUE);
        std::thread::Builder::new()
            .name("procfs".into())
            .spawn(move || {
                for Job { id, pid, comm } in rx {
                    let Loaded {
                        resource,
                        traits,
                        cacheable,
                    } = load_resource_selected(
                        &proc_root,
                        &host_name,
                        pid,
                        comm_text(&comm),
                        k8s.as_ref(),
                        selection.as_ref(),
                    );
                    let answer = Done {
                        id,
                        pid,
                        resource,
                        traits,
                        cacheable,
                    };
                    if tx.send(answer).is_err() {
                        return; // the pipeline is gone
                    }
                }
            })?;
        Ok(Self { jobs, done })
    }

    /// Queues a job without waiting; false when the queue is full (or the worker died).
    pub fn submit(&self, job: Job) -> bool {
        self.jobs.try_send(job).is_ok()
    }

    /// The next answer, if one is ready.
    pub fn try_done(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }

    /// The next answer, waiting for it at most `wait`.
    pub fn done_within(&self, wait: std::time::Duration) -> Option<Done> {
        self.done.recv_timeout(wait).ok()
    }
}
