//! `wsync-bench`: measures wsync-monitor against plain rsync and prints a markdown table.
//! Run it through `scripts/bench.sh`, which builds in release mode and picks a tmpfs.

fn main() {
    if let Err(err) = wsync_bench::run(std::env::args().skip(1).collect()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
