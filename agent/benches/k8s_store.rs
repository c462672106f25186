//! Memory of the Kubernetes pod metadata store (`enrich::k8s::PodStore`), measured, not
//! estimated: a counting global allocator records the bytes live before and after the store is
//! filled with N pods converted from a realistic Pod object (the API reference's shape, two
//! containers, labels, annotations, an owner chain; see src/enrich/k8s/testdata), each pod with
//! its own uid, name and label values. Prints bytes per pod and per 1,000 pods for a node's
//! usual pod counts (kubelet's default limit is 110) and the store's bound. Asserts nothing
//! about the figures.
//!
//! Run: cargo bench -p agent --bench k8s_store

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use agent::enrich::k8s::{PodMeta, PodStore, MAX_PODS};
use k8s_openapi::api::core::v1::Pod;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts the sizes it is asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const POD: &str = include_str!("../src/enrich/k8s/testdata/deployment-pod.json");

fn pods(n: usize) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            let json = POD
                .replace(
                    "5f2c1a9e-3b7d-4c8e-9a1f-2d6e8b4c0a17",
                    &format!("5f2c1a9e-3b7d-4c8e-9a1f-{i:012x}"),
                )
                .replace(
                    "checkout-7d9f8b6c5d-x2k4p",
                    &format!("checkout-7d9f8b6c5d-{i:05}"),
                )
                .replace("\"checkout\"", &format!("\"checkout-{}\"", i % 50));
            serde_json::from_str(&json).expect("the testdata Pod parses")
        })
        .collect()
}

fn main() {
    println!("pod metadata store (enrich::k8s::PodStore), heap bytes counted by the allocator:");
    for n in [110, 1000, MAX_PODS] {
        let objects = pods(n);
        let now = Instant::now();
        let before = LIVE.load(Ordering::Relaxed);
        let mut store = PodStore::default();
        for p in &objects {
            if let Some(m) = PodMeta::from_pod(p) {
                store.upsert(m, now);
            }
        }
        let bytes = LIVE.load(Ordering::Relaxed) - before;
        assert_eq!(store.len(), n);
        println!(
            "  {n:>5} pods: {:>8} KiB live, {:>5} bytes per pod = {:.2} MiB per 1,000 pods \
             (the store's own estimate: {} KiB)",
            bytes / 1024,
            bytes / n as isize,
            bytes as f64 / n as f64 * 1000.0 / 1048576.0,
            store.heap_bytes() / 1024
        );
        drop(store);
    }
}
