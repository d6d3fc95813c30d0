//! `tj-sleep-baseline [FIRES] [INTERVAL_MS]`: the baseline for scheduler fire lateness — sleep
//! to each deadline and record how late the wake-up is. Prints one JSON line with p50/p99/max in
//! milliseconds for a plain thread (`std::thread::sleep`) and for a tokio timer (what an async
//! scheduler can do at best).

use std::time::{Duration, Instant};

use telejob_benches::percentile;

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        percentile(&v, 1.0),
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let fires: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let interval = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(20));
    let mut thread = Vec::with_capacity(fires);
    let start = Instant::now() + interval;
    for i in 0..fires {
        let deadline = start + interval * i as u32;
        if let Some(left) = deadline.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        thread.push(deadline.elapsed().as_secs_f64() * 1e3);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tokio_lat = rt.block_on(async {
        let mut v = Vec::with_capacity(fires);
        let start = tokio::time::Instant::now() + interval;
        for i in 0..fires {
            let deadline = start + interval * i as u32;
            tokio::time::sleep_until(deadline).await;
            v.push(deadline.elapsed().as_secs_f64() * 1e3);
        }
        v
    });
    let (t50, t99, tmax) = percentiles(thread);
    let (k50, k99, kmax) = percentiles(tokio_lat);
    println!(
        "{{\"fires\":{fires},\"thread\":{{\"p50\":{t50:.3},\"p99\":{t99:.3},\"max\":{tmax:.3}}},\
         \"tokio\":{{\"p50\":{k50:.3},\"p99\":{k99:.3},\"max\":{kmax:.3}}}}}"
    );
}
