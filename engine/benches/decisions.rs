//! Decision cost: rule lookup + `decide` with 1, 100 and 10 000 rules keyed by
//! share, uncached (share index), cached (per-file `CachedRule`), and a naive
//! linear scan for comparison. The file matches the LAST rule (worst case for a
//! scan). Run:
//! `cargo bench -p flushguard-engine --bench decisions -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use flushguard_engine::{
    decide, Action, CompiledPolicy, FileKey, FileName, FileProvider, MajorFunction, Matcher, Mode,
    OperationView, Phase, Policy, ProviderSelector, Rule,
};
use std::hint::black_box;

fn policy(n: usize) -> CompiledPolicy {
    let rules = (0..n)
        .map(|i| Rule {
            name: format!("r{i}"),
            matcher: Matcher {
                provider: ProviderSelector::Smb,
                share: Some(format!("\\\\srv{}\\share{}", i % 100, i)),
                path: Some("**/*.db".into()),
                ..Default::default()
            },
            action: Action::with_mode(if i % 2 == 0 {
                Mode::WriteThrough
            } else {
                Mode::FlushAfterWrite
            }),
        })
        .collect();
    CompiledPolicy::new(
        Policy {
            rules,
            ..Policy::pass_through()
        },
        1,
    )
    .expect("valid policy")
}

fn bench(c: &mut Criterion) {
    let view = OperationView {
        length: 4096,
        ..OperationView::new(MajorFunction::Write, Phase::Pre)
    };
    let mut g = c.benchmark_group("decision");
    for n in [1usize, 100, 10_000] {
        let p = policy(n);
        let last = n - 1;
        let name = FileName::parse(&format!(
            "\\Device\\Mup\\srv{}\\share{}\\dir\\sub\\data.db",
            last % 100,
            last
        ))
        .expect("valid name");
        let key = FileKey {
            provider: FileProvider::Smb,
            name: Some(&name),
            process_image: "app.exe",
        };
        assert_eq!(p.lookup(&key).index, Some(last as u32));
        assert_eq!(p.lookup_linear(&key).index, Some(last as u32));
        g.bench_with_input(BenchmarkId::new("uncached", n), &n, |b, _| {
            b.iter(|| {
                let r = p.lookup(black_box(&key));
                decide(&r.action, black_box(&view))
            })
        });
        let cached = p.lookup_cached(&key);
        g.bench_with_input(BenchmarkId::new("cached", n), &n, |b, _| {
            b.iter(|| {
                let c = black_box(&cached);
                let action = if c.is_current(&p) {
                    c.rule.action
                } else {
                    p.lookup(&key).action
                };
                decide(&action, black_box(&view))
            })
        });
        g.bench_with_input(BenchmarkId::new("linear", n), &n, |b, _| {
            b.iter(|| {
                let r = p.lookup_linear(black_box(&key));
                decide(&r.action, black_box(&view))
            })
        });
    }
    g.finish();
    c.bench_function("name_parse", |b| {
        b.iter(|| {
            FileName::parse(black_box(
                "\\Device\\Mup\\srv7\\share1957\\dir\\sub\\data.db",
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
