//! `make bench` (directory part): lookups per second with and without the
//! cache, against a private slapd holding 1000 users, from 20 concurrent
//! callers. Prints one JSON line. Not a test: it asserts only that every
//! lookup found its user.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::{Fixture, Slapd};
use directory::{Directory, Lookup, Mapping};

const USERS: usize = 1000;
const CALLERS: usize = 20;
const COLD_ROUNDS: usize = 3;
const WARM_ROUNDS: usize = 50;

/// Looks every address up once, from `CALLERS` tasks; returns the seconds.
async fn round(directory: &Directory, addresses: &Arc<Vec<String>>) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let directory = directory.clone();
        let addresses = Arc::clone(addresses);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(address) = addresses.get(i) else {
                    break;
                };
                match directory.lookup(address).await {
                    Ok(Lookup::Found(_)) => {}
                    other => panic!("{address}: {other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("lookup task");
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let slapd = Slapd::start(Fixture::ActiveDirectoryWithLargeGroup(USERS));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mapping = Mapping::load("active-directory").expect("preset");
        let directory =
            Directory::new(slapd.config(), mapping, vec!["extensionAttribute10".into()])
                .expect("directory");
        let addresses: Arc<Vec<String>> = Arc::new(
            (1..=USERS)
                .map(|n| format!("staff{n:04}@example.com"))
                .collect(),
        );

        // Without the cache: every round starts empty, so every lookup is a search.
        let _ = round(&directory, &addresses).await; // connect, warm slapd
        let mut cold = 0.0;
        for _ in 0..COLD_ROUNDS {
            directory.clear_cache();
            cold += round(&directory, &addresses).await;
        }
        let searches_before = slapd.completed_searches();

        // With the cache: the same addresses, answered from memory.
        let mut warm = 0.0;
        for _ in 0..WARM_ROUNDS {
            warm += round(&directory, &addresses).await;
        }
        let searches_during_warm = slapd.completed_searches() - searches_before;

        let cold_rate = (COLD_ROUNDS * USERS) as f64 / cold;
        let warm_rate = (WARM_ROUNDS * USERS) as f64 / warm;
        println!(
            "{{\"users\": {USERS}, \"callers\": {CALLERS}, \
             \"lookups_per_s_without_cache\": {cold_rate:.0}, \
             \"lookups_per_s_with_cache\": {warm_rate:.0}, \
             \"ratio\": {:.1}, \"ldap_searches_with_warm_cache\": {searches_during_warm}}}",
            warm_rate / cold_rate
        );
    });
}
