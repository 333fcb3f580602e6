//! Dice expressions: a small hand-written parser and the roller.
//!
//! Grammar (whitespace allowed between tokens, case-insensitive `d`, `k`, `h`, `l`):
//!
//! ```text
//! expression := sign? term (sign term)*
//! sign       := "+" | "-"
//! term       := dice | number
//! dice       := number? "d" (number | "%") keep?
//! keep       := "kh" number | "kl" number | "k" number      (k alone keeps the highest)
//! ```
//!
//! `d%` is a hundred-sided die. Limits: at most [`MAX_DICE`] dice in the whole expression, at
//! most [`MAX_SIDES`] sides per die, constants up to [`MAX_CONSTANT`], expressions up to
//! [`MAX_LEN`] characters. Every error carries the character offset (0-based) where it was
//! found. No crate on crates.io is both well kept and gives positions in its errors, hence
//! the ~150 lines below.

use rand::Rng;

/// Most dice one expression may roll.
pub const MAX_DICE: u64 = 1000;
/// Most sides of one die.
pub const MAX_SIDES: u64 = 1_000_000;
/// Largest constant term.
pub const MAX_CONSTANT: u64 = 1_000_000;
/// Longest expression, in characters.
pub const MAX_LEN: usize = 1000;

/// Why an expression was refused, and where (a character offset, 0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiceError {
    /// Character offset of the fault.
    pub position: usize,
    /// What was wrong.
    pub message: String,
}

impl DiceError {
    fn at(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}

/// Which dice of a group count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Keep the `n` highest.
    Highest(u32),
    /// Keep the `n` lowest.
    Lowest(u32),
}

/// One term of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `count` dice of `sides` sides, optionally keeping only some.
    Dice {
        /// How many dice.
        count: u32,
        /// Sides of each.
        sides: u32,
        /// Keep-highest/lowest, if any.
        keep: Option<Keep>,
    },
    /// A constant.
    Constant(i64),
}

/// A parsed expression: signed terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    /// `(+1 | -1, term)` in order.
    pub terms: Vec<(i64, Term)>,
}

/// One die rolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledDie {
    /// Sides of the die.
    pub sides: u32,
    /// The face that came up.
    pub value: u32,
    /// Whether it counts towards the total (keep-highest/lowest may drop it).
    pub kept: bool,
    /// Whether its group is subtracted from the total.
    pub subtracted: bool,
}

/// The outcome of a roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rolled {
    /// The total.
    pub total: i64,
    /// Every die, in the order of the expression.
    pub dice: Vec<RolledDie>,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_lower(&self) -> Option<char> {
        self.peek().map(|c| c.to_ascii_lowercase())
    }

    /// A run of digits, or `None` when there is none here. Refuses values above `max`.
    fn number(&mut self, what: &str, max: u64) -> Result<Option<u64>, DiceError> {
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            value = value.saturating_mul(10).saturating_add(u64::from(d));
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        if value > max {
            return Err(DiceError::at(
                start,
                format!(
                    "{what} {} is larger than the limit of {max}",
                    self.text(start)
                ),
            ));
        }
        Ok(Some(value))
    }

    fn text(&self, start: usize) -> String {
        self.chars[start..self.pos].iter().collect()
    }

    fn describe_here(&self) -> String {
        match self.peek() {
            Some(c) => format!("unexpected `{c}`"),
            None => "unexpected end of expression".into(),
        }
    }

    fn term(&mut self, dice_so_far: &mut u64) -> Result<Term, DiceError> {
        let start = self.pos;
        let count = self.number("the dice count", u64::MAX)?;
        if self.peek_lower() != Some('d') {
            return match count {
                Some(n) if n > MAX_CONSTANT => Err(DiceError::at(
                    start,
                    format!(
                        "the constant {} is larger than the limit of {MAX_CONSTANT}",
                        self.text(start)
                    ),
                )),
                Some(n) => Ok(Term::Constant(n as i64)),
                None => Err(DiceError::at(
                    self.pos,
                    format!(
                        "{}: expected a number or a die such as `d20`",
                        self.describe_here()
                    ),
                )),
            };
        }
        let count = count.unwrap_or(1);
        if count == 0 {
            return Err(DiceError::at(start, "roll at least one die"));
        }
        *dice_so_far = dice_so_far.saturating_add(count);
        if *dice_so_far > MAX_DICE {
            return Err(DiceError::at(
                start,
                format!("the expression rolls more than {MAX_DICE} dice"),
            ));
        }
        self.pos += 1; // the `d`
        let sides_at = self.pos;
        let sides = if self.peek() == Some('%') {
            self.pos += 1;
            100
        } else {
            match self.number("the number of sides", MAX_SIDES)? {
                Some(0) => return Err(DiceError::at(sides_at, "a die needs at least one side")),
                Some(s) => s,
                None => {
                    return Err(DiceError::at(
                        sides_at,
                        format!(
                            "{}: expected the number of sides or `%`",
                            self.describe_here()
                        ),
                    ))
                }
            }
        };
        let keep = if self.peek_lower() == Some('k') {
            let keep_at = self.pos;
            self.pos += 1;
            let highest = match self.peek_lower() {
                Some('h') => {
                    self.pos += 1;
                    true
                }
                Some('l') => {
                    self.pos += 1;
                    false
                }
                _ => true,
            };
            let n_at = self.pos;
            let n = match self.number("the number of dice kept", u64::MAX)? {
                Some(n) => n,
                None => {
                    return Err(DiceError::at(
                        n_at,
                        format!("{}: expected how many dice to keep", self.describe_here()),
                    ))
                }
            };
            if n == 0 || n > count {
                return Err(DiceError::at(
                    keep_at,
                    format!("keep between 1 and {count} dice (the group rolls {count})"),
                ));
            }
            let n = n as u32;
            Some(if highest {
                Keep::Highest(n)
            } else {
                Keep::Lowest(n)
            })
        } else {
            None
        };
        Ok(Term::Dice {
            count: count as u32,
            sides: sides as u32,
            keep,
        })
    }
}

/// Parses an expression such as `4d6kh3 + 2`.
pub fn parse(input: &str) -> Result<Expression, DiceError> {
    let chars: Vec<char> = input.chars().collect();
    if chars.len() > MAX_LEN {
        return Err(DiceError::at(
            MAX_LEN,
            format!("the expression is longer than {MAX_LEN} characters"),
        ));
    }
    let mut p = Parser { chars, pos: 0 };
    let mut terms = Vec::new();
    let mut dice = 0u64;
    p.skip_ws();
    if p.peek().is_none() {
        return Err(DiceError::at(0, "the expression is empty"));
    }
    let mut sign = 1;
    match p.peek() {
        Some('+') => p.pos += 1,
        Some('-') => {
            sign = -1;
            p.pos += 1
        }
        _ => {}
    }
    loop {
        p.skip_ws();
        let term = p.term(&mut dice)?;
        terms.push((sign, term));
        p.skip_ws();
        sign = match p.peek() {
            None => break,
            Some('+') => 1,
            Some('-') => -1,
            Some(_) => {
                return Err(DiceError::at(
                    p.pos,
                    format!("{}: expected `+`, `-` or the end", p.describe_here()),
                ))
            }
        };
        p.pos += 1;
    }
    Ok(Expression { terms })
}

/// Rolls a parsed expression.
pub fn roll(expr: &Expression, rng: &mut impl Rng) -> Rolled {
    let mut total = 0i64;
    let mut dice = Vec::new();
    for (sign, term) in &expr.terms {
        match *term {
            Term::Constant(n) => total += sign * n,
            Term::Dice { count, sides, keep } => {
                let values: Vec<u32> = (0..count).map(|_| rng.random_range(1..=sides)).collect();
                let mut kept = vec![keep.is_none(); values.len()];
                if let Some(keep) = keep {
                    let mut order: Vec<usize> = (0..values.len()).collect();
                    // Stable sort: among equal faces the earlier die is kept.
                    match keep {
                        Keep::Highest(_) => order.sort_by(|a, b| values[*b].cmp(&values[*a])),
                        Keep::Lowest(_) => order.sort_by(|a, b| values[*a].cmp(&values[*b])),
                    }
                    let n = match keep {
                        Keep::Highest(n) | Keep::Lowest(n) => n as usize,
                    };
                    for i in order.into_iter().take(n) {
                        kept[i] = true;
                    }
                }
                for (value, kept) in values.into_iter().zip(kept) {
                    if kept {
                        total += sign * i64::from(value);
                    }
                    dice.push(RolledDie {
                        sides,
                        value,
                        kept,
                        subtracted: *sign < 0,
                    });
                }
            }
        }
    }
    Rolled { total, dice }
}

/// The smallest and largest totals an expression can roll.
pub fn bounds(expr: &Expression) -> (i64, i64) {
    let (mut lo, mut hi) = (0i64, 0i64);
    for (sign, term) in &expr.terms {
        let (tlo, thi) = match *term {
            Term::Constant(n) => (n, n),
            Term::Dice { count, sides, keep } => {
                let n = match keep {
                    Some(Keep::Highest(n) | Keep::Lowest(n)) => n,
                    None => count,
                };
                (i64::from(n), i64::from(n) * i64::from(sides))
            }
        };
        if *sign > 0 {
            lo += tlo;
            hi += thi;
        } else {
            lo -= thi;
            hi -= tlo;
        }
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn err(input: &str) -> DiceError {
        parse(input).expect_err(input)
    }

    #[test]
    fn the_documented_forms_parse() {
        for e in [
            "d20", "3d6+2", "4d6kh3", "4d6kl1", "2d10-1d4", "d%", "7", "-d4 + 10", " 2D8K1 ",
        ] {
            parse(e).unwrap_or_else(|e2| panic!("{e}: {e2:?}"));
        }
        assert_eq!(
            parse("3d6+2").unwrap().terms,
            vec![
                (
                    1,
                    Term::Dice {
                        count: 3,
                        sides: 6,
                        keep: None
                    }
                ),
                (1, Term::Constant(2))
            ]
        );
        assert_eq!(
            parse("d%").unwrap().terms,
            vec![(
                1,
                Term::Dice {
                    count: 1,
                    sides: 100,
                    keep: None
                }
            )]
        );
    }

    #[test]
    fn every_face_of_a_d6_appears_and_totals_stay_in_range() {
        let e = parse("d6").unwrap();
        let mut seen = [0u32; 7];
        let mut r = rng();
        for _ in 0..6000 {
            let out = roll(&e, &mut r);
            assert!((1..=6).contains(&out.total));
            seen[out.total as usize] += 1;
        }
        for (face, n) in seen.iter().enumerate().skip(1) {
            // Each face expects 1000; far outside 700..1300 would mean a broken roller.
            assert!((700..1300).contains(n), "face {face} came up {n} times");
        }
        let e = parse("3d6+2").unwrap();
        for _ in 0..2000 {
            let t = roll(&e, &mut r).total;
            assert!((5..=20).contains(&t), "{t}");
        }
    }

    #[test]
    fn keep_highest_and_lowest_keep_the_right_dice() {
        let mut r = rng();
        for (expr, highest) in [("4d6kh3", true), ("4d6kl1", false)] {
            let e = parse(expr).unwrap();
            for _ in 0..500 {
                let out = roll(&e, &mut r);
                assert_eq!(out.dice.len(), 4);
                let kept: Vec<u32> = out
                    .dice
                    .iter()
                    .filter(|d| d.kept)
                    .map(|d| d.value)
                    .collect();
                let dropped: Vec<u32> = out
                    .dice
                    .iter()
                    .filter(|d| !d.kept)
                    .map(|d| d.value)
                    .collect();
                assert_eq!(kept.len(), if highest { 3 } else { 1 });
                for k in &kept {
                    for d in &dropped {
                        assert!(if highest { k >= d } else { k <= d }, "{expr}: {out:?}");
                    }
                }
                assert_eq!(out.total, kept.iter().map(|v| i64::from(*v)).sum::<i64>());
            }
        }
    }

    #[test]
    fn subtracted_dice_lower_the_total() {
        let e = parse("2d10-1d4").unwrap();
        let mut r = rng();
        for _ in 0..500 {
            let out = roll(&e, &mut r);
            let expect: i64 = out
                .dice
                .iter()
                .map(|d| {
                    if d.subtracted {
                        -i64::from(d.value)
                    } else {
                        i64::from(d.value)
                    }
                })
                .sum();
            assert_eq!(out.total, expect);
            assert!((-2..=19).contains(&out.total));
        }
    }

    #[test]
    fn every_error_names_its_position() {
        assert_eq!(err("").position, 0);
        assert_eq!(err("   ").position, 0);
        assert_eq!(err("d").position, 1);
        assert_eq!(err("3d6+").position, 4);
        assert_eq!(err("3d6 x").position, 4);
        assert_eq!(err("2d6+d0").position, 5);
        assert_eq!(err("0d6").position, 0);
        assert_eq!(err("4d6kh5").position, 3);
        assert_eq!(err("4d6kh0").position, 3);
        assert_eq!(err("4d6kh").position, 5);
        assert_eq!(err("1d1000001").position, 2);
        assert!(err("1d1000001").message.contains("1000000"));
        assert_eq!(err("d6+1001d6").position, 3);
        assert!(err("1001d6").message.contains("1000 dice"));
        assert_eq!(err("500d6+500d6+d6").position, 12);
        assert_eq!(err("2+9999999").position, 2);
        assert_eq!(err("ä").position, 0);
        assert_eq!(err("éé+x").position, 0);
        assert_eq!(err("2+é").position, 2);
        assert_eq!(err(&"1+".repeat(600)).position, MAX_LEN);
    }

    #[test]
    fn a_thousand_dice_of_a_million_sides_are_allowed() {
        let e = parse("1000d1000000").unwrap();
        let out = roll(&e, &mut rng());
        assert_eq!(out.dice.len(), 1000);
        let (lo, hi) = bounds(&e);
        assert!((lo..=hi).contains(&out.total));
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(s in any::<String>()) {
            if let Ok(e) = parse(&s) {
                let out = roll(&e, &mut rng());
                let (lo, hi) = bounds(&e);
                prop_assert!(lo <= out.total && out.total <= hi);
            }
        }

        #[test]
        fn dice_like_input_never_panics_and_totals_stay_in_bounds(
            chars in prop::collection::vec(
                prop::sample::select(vec!['0', '1', '2', '3', '6', '9', 'd', 'D', 'k', 'h', 'l', '%', '+', '-', ' ']),
                0..24,
            )
        ) {
            let s: String = chars.into_iter().collect();
            match parse(&s) {
                Ok(e) => {
                    let out = roll(&e, &mut rng());
                    let (lo, hi) = bounds(&e);
                    prop_assert!(lo <= out.total && out.total <= hi, "{s}: {out:?}");
                    prop_assert!(out.dice.len() as u64 <= MAX_DICE);
                    prop_assert!(i32::try_from(out.total).is_ok());
                }
                Err(e) => prop_assert!(e.position <= s.chars().count(), "{s}: {e:?}"),
            }
        }
    }
}
