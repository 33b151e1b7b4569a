//! The bcrypt floor for the benchmark harness: how many hashes per second the `bcrypt` crate
//! cerego uses makes at a given cost on all cores, with nothing else in the way.
//!
//! `bcrypt-floor COST SECONDS` prints `{"cost":…,"threads":…,"hashes_per_sec":…}`;
//! `bcrypt-floor --hash COST PASSWORD` prints one hash (used to seed benchmark users).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, name: &str| -> u64 {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
            panic!("usage: bcrypt-floor COST SECONDS | --hash COST PASSWORD ({name})")
        })
    };
    if args.first().map(String::as_str) == Some("--hash") {
        let cost = u32::try_from(number(1, "cost")).expect("cost");
        let password = args.get(2).expect("password");
        println!("{}", bcrypt::hash(password, cost).expect("hash"));
        return;
    }
    let cost = u32::try_from(number(0, "cost")).expect("cost");
    let seconds = number(1, "seconds");
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while Instant::now() < deadline {
                    bcrypt::hash("correct horse battery staple", cost).expect("hash");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{{\"cost\":{cost},\"threads\":{threads},\"hashes_per_sec\":{rate:.3}}}");
}
