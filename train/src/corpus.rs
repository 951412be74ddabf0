//! The built-in training text: a generated play in the shape of Tiny Shakespeare (speaker
//! names, verse lines, stage directions), so that `train` works with no download and the loss
//! visibly falls. It is produced from a fixed seed, so every machine trains on the same text.

use crate::rng::SplitMix64;

/// Characters of generated text (about a fifth of Tiny Shakespeare).
const TARGET_CHARS: usize = 250_000;

const SPEAKERS: [&str; 10] = [
    "ROMEO",
    "JULIET",
    "KING HENRY",
    "QUEEN MARGARET",
    "FIRST CITIZEN",
    "MENENIUS",
    "HAMLET",
    "LADY CAPULET",
    "GLOUCESTER",
    "NURSE",
];
const SUBJECTS: [&str; 14] = [
    "the king",
    "my lord",
    "the queen",
    "this night",
    "thy father",
    "the people",
    "my heart",
    "the duke",
    "sweet love",
    "the crown",
    "our cousin",
    "fair Verona",
    "the citizens",
    "my soul",
];
const VERBS: [&str; 14] = [
    "doth love",
    "shall see",
    "hath lost",
    "will bear",
    "must know",
    "doth fear",
    "would keep",
    "hath sworn",
    "shall find",
    "doth seek",
    "will break",
    "must leave",
    "hath won",
    "doth hold",
];
const OBJECTS: [&str; 14] = [
    "the gentle heart",
    "a noble cause",
    "his honour",
    "the bitter day",
    "our ancient house",
    "thy true word",
    "the silver moon",
    "a crown of gold",
    "the weary world",
    "her fair name",
    "the town gates",
    "my poor life",
    "the morning sun",
    "all our hope",
];
const ENDINGS: [&str; 8] = [
    ".",
    ".",
    ".",
    "!",
    "?",
    ", and so farewell.",
    ", I pray you.",
    ", by my troth.",
];
const OPENERS: [&str; 8] = ["", "", "", "O, ", "Nay, ", "Ay, ", "Good sir, ", "Alas, "];
const DIRECTIONS: [&str; 4] = ["[Exit]", "[Enter attendants]", "[Flourish]", "[Exeunt]"];

/// The generated corpus.
pub fn builtin_corpus() -> String {
    let mut rng = SplitMix64::new(0x05EE_D0FE_4BE4);
    let mut text = String::with_capacity(TARGET_CHARS + 512);
    let mut scene = 0;
    while text.len() < TARGET_CHARS {
        if scene % 12 == 0 {
            text.push_str(&format!(
                "ACT {}. SCENE {}.\n\n",
                scene / 12 + 1,
                scene % 12 + 1
            ));
        }
        scene += 1;
        for _ in 0..3 + rng.below(5) {
            text.push_str(rng.pick(&SPEAKERS));
            text.push_str(":\n");
            for _ in 0..1 + rng.below(4) {
                let opener = rng.pick(&OPENERS);
                let subject = rng.pick(&SUBJECTS);
                // Sentences start with a capital, as in the real text.
                let subject = if opener.is_empty() {
                    capitalize(subject)
                } else {
                    subject.to_string()
                };
                text.push_str(&format!(
                    "{opener}{subject} {} {}{}\n",
                    rng.pick(&VERBS),
                    rng.pick(&OBJECTS),
                    rng.pick(&ENDINGS)
                ));
            }
            if rng.below(6) == 0 {
                text.push_str(rng.pick(&DIRECTIONS));
                text.push('\n');
            }
            text.push('\n');
        }
    }
    text
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_sized() {
        let a = builtin_corpus();
        assert_eq!(a, builtin_corpus());
        assert!((TARGET_CHARS..TARGET_CHARS + 2000).contains(&a.len()));
        assert!(a.starts_with("ACT 1. SCENE 1.\n\n"));
        assert!(a.contains(":\n"));
    }
}
