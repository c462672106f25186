//! Procfs reads off the thread that drains the ring buffer.
//!
//! Reading `/proc/<pid>/{cmdline,environ,exe}` for a new process, or all of `/proc/net/tcp`
//! to recognise this agent's own export connection, takes tens of microseconds to
//! milliseconds; done inline it stalls the ring buffer. The pipeline [`submit`]s a [`Job`] when
//! a record arrives (before it is held for ordering, so the answer is usually back before the
//! record is processed) and applies each [`Done`] when it comes. Both channels are bounded;
//! a job that does not fit is refused (the caller then does the read inline, counted), and the
//! worker, not the pipeline, waits when answers are not collected.
//!
//! [`submit`]: ProcWorker::submit

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use agent_common::SockAddr;

use super::{load_resource, Loaded};
use crate::conn::comm_text;
use crate::span::model::Resource;

/// Jobs waiting for the worker; beyond this `submit` refuses.
const QUEUE: usize = 1024;

/// What the worker is asked to find out.
#[derive(Debug, Clone, Copy)]
pub enum Job {
    /// The resource of process `pid` (`comm` names it if it is already gone). `id` pairs the
    /// answer with this request (pids are reused).
    Resource { id: u64, pid: u32, comm: [u8; 16] },
    /// Whether connection `conn_id` (`local`→`remote` as its process sees it) is the collector's
    /// side of one of this agent's own connections.
    OwnConnection {
        conn_id: u64,
        local: SockAddr,
        remote: SockAddr,
    },
}

/// An answer.
#[derive(Debug)]
pub enum Done {
    Resource {
        id: u64,
        pid: u32,
        resource: Arc<Resource>,
        /// False for a process that was gone with nothing to name it by: not worth caching.
        cacheable: bool,
    },
    /// Only sent when it is one of ours.
    OwnConnection { conn_id: u64 },
}

/// The worker thread's ends of the two channels.
pub struct ProcWorker {
    jobs: SyncSender<Job>,
    done: Receiver<Done>,
}

impl ProcWorker {
    /// Starts the worker thread; it ends when this handle is dropped.
    pub fn spawn(host_name: String, proc_root: PathBuf) -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let (tx, done) = sync_channel::<Done>(QUEUE);
        std::thread::Builder::new()
            .name("procfs".into())
            .spawn(move || {
                for job in rx {
                    let answer = match job {
                        Job::Resource { id, pid, comm } => {
                            let Loaded {
                                resource,
                                cacheable,
                            } = load_resource(&proc_root, &host_name, pid, comm_text(&comm));
                            Some(Done::Resource {
                                id,
                                pid,
                                resource,
                                cacheable,
                            })
                        }
                        Job::OwnConnection {
                            conn_id,
                            local,
                            remote,
                        } => crate::ebpf::seed::is_own_connection(&remote, &local)
                            .then_some(Done::OwnConnection { conn_id }),
                    };
                    if let Some(a) = answer {
                        if tx.send(a).is_err() {
                            return; // the pipeline is gone
                        }
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
}
