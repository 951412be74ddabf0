//! `generate`: the same text for the same seed, another for another seed, greedy decoding with
//! top-k 1, and a prompt character outside the vocabulary named with its position.

mod common;

use common::{generate_bin, out_err, trained_run};

#[test]
fn generate_is_reproducible_and_names_unknown_characters() {
    let out = tempfile::tempdir().unwrap();
    let run = trained_run(out.path(), &[]);
    let generate = |args: &[&str]| {
        generate_bin(&[])
            .args(["--run", run.to_str().unwrap(), "--max-tokens", "40"])
            .args(args)
            .output()
            .unwrap()
    };
    let (a, b, c) = (
        generate(&["--seed", "1", "--prompt", "ROMEO:"]),
        generate(&["--seed", "1", "--prompt", "ROMEO:"]),
        generate(&["--seed", "2", "--prompt", "ROMEO:"]),
    );
    assert!(a.status.success(), "{}", out_err(&a));
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(
        text.starts_with("ROMEO:") && text.trim_end().chars().count() >= 40,
        "{text}"
    );
    let bad = generate(&["--prompt", "Roméo"]);
    assert!(!bad.status.success());
    assert!(
        out_err(&bad)
            .contains("--prompt: character 'é' (U+00E9) at character 3 is not in the vocabulary"),
        "{}",
        out_err(&bad)
    );
    let top = generate(&["--top-k", "1", "--seed", "5"]);
    let top2 = generate(&["--top-k", "1", "--seed", "6"]);
    assert_eq!(
        top.stdout, top2.stdout,
        "top-k 1 is greedy, whatever the seed"
    );
}
