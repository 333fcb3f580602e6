//! The pure rules of a battle: each combatant's score, the delta between them and
//! the winner rule. No I/O here, so every case is unit-tested with fixed draws.

use entity::meal::Difficulty;

/// What a difficulty costs a meal's score: HIGH 1, MED 2, LOW 3.
pub fn difficulty_penalty(difficulty: Difficulty) -> f64 {
    match difficulty {
        Difficulty::High => 1.0,
        Difficulty::Med => 2.0,
        Difficulty::Low => 3.0,
    }
}

/// score = price × len(cuisine) − penalty(difficulty). The length counts characters, not
/// bytes, so `Café` is 4 long.
pub fn score(price: f64, cuisine: &str, difficulty: Difficulty) -> f64 {
    price * cuisine.chars().count() as f64 - difficulty_penalty(difficulty)
}

/// delta = |score₁ − score₂| / 100.
pub fn delta(score_1: f64, score_2: f64) -> f64 {
    (score_1 - score_2).abs() / 100.0
}

/// The winner rule: combatant 1 wins when `delta > random`, otherwise combatant 2 does.
/// `random` is uniform in [0, 1), so equal scores (delta 0) always go to combatant 2.
pub fn first_wins(delta: f64, random: f64) -> bool {
    delta > random
}

/// The numbers that decided one battle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Whether combatant 1 won.
    pub first_wins: bool,
    /// Combatant 1's score.
    pub score_1: f64,
    /// Combatant 2's score.
    pub score_2: f64,
    /// |score₁ − score₂| / 100.
    pub delta: f64,
    /// The draw compared with `delta`.
    pub random: f64,
}

/// Decides a battle between two scores with the draw `random`.
pub fn decide(score_1: f64, score_2: f64, random: f64) -> Verdict {
    let delta = delta(score_1, score_2);
    Verdict {
        first_wins: first_wins(delta, random),
        score_1,
        score_2,
        delta,
        random,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_difficulty_costs_its_penalty() {
        assert_eq!(score(10.0, "Thai", Difficulty::High), 39.0);
        assert_eq!(score(10.0, "Thai", Difficulty::Med), 38.0);
        assert_eq!(score(10.0, "Thai", Difficulty::Low), 37.0);
    }

    #[test]
    fn the_score_multiplies_the_price_by_the_cuisine_length() {
        // 9.5 × 7 − 3
        assert_eq!(score(9.5, "Italian", Difficulty::Low), 63.5);
        // 22 × 8 − 1
        assert_eq!(score(22.0, "Japanese", Difficulty::High), 175.0);
    }

    #[test]
    fn the_cuisine_length_counts_characters_not_bytes() {
        assert_eq!(score(1.0, "Café", Difficulty::High), 3.0);
    }

    #[test]
    fn a_score_can_be_negative() {
        assert_eq!(score(0.5, "X", Difficulty::Low), -2.5);
    }

    #[test]
    fn delta_is_the_absolute_difference_over_100() {
        assert_eq!(delta(175.0, 63.5), 1.115);
        assert_eq!(delta(63.5, 175.0), 1.115);
        assert_eq!(delta(-2.5, 47.5), 0.5);
    }

    #[test]
    fn combatant_one_wins_when_delta_exceeds_the_draw() {
        assert!(first_wins(0.5, 0.0));
        assert!(first_wins(0.5, 0.499_999));
        assert!(first_wins(1.2, 0.999_999));
    }

    #[test]
    fn combatant_two_wins_when_the_draw_reaches_delta() {
        assert!(
            !first_wins(0.5, 0.5),
            "delta equal to the draw is not greater"
        );
        assert!(!first_wins(0.5, 0.75));
        assert!(!first_wins(0.01, 0.999));
    }

    #[test]
    fn a_tie_always_goes_to_combatant_two() {
        let s = score(12.0, "Italian", Difficulty::Med);
        for r in [0.0, 0.000_001, 0.5, 0.999_999] {
            let v = decide(s, s, r);
            assert_eq!(v.delta, 0.0);
            assert!(!v.first_wins, "draw {r}");
        }
    }

    #[test]
    fn same_meal_data_with_different_difficulties_is_decided_by_the_draw() {
        // HIGH vs LOW: scores differ by 2, delta 0.02.
        let high = score(10.0, "French", Difficulty::High);
        let low = score(10.0, "French", Difficulty::Low);
        assert_eq!(decide(high, low, 0.019).delta, 0.02);
        assert!(decide(high, low, 0.019).first_wins);
        assert!(!decide(high, low, 0.02).first_wins);
        assert!(!decide(low, high, 0.5).first_wins);
        // MED vs LOW: delta 0.01.
        let med = score(10.0, "French", Difficulty::Med);
        assert!(decide(med, low, 0.009).first_wins);
        assert!(!decide(med, low, 0.01).first_wins);
    }

    #[test]
    fn a_delta_of_one_or_more_always_goes_to_combatant_one() {
        let v = decide(175.0, 63.5, 0.999_999_9);
        assert!(v.first_wins);
        let v = decide(63.5, 175.0, 0.999_999_9);
        assert!(
            v.first_wins,
            "combatant 1 wins on a big delta even with the lower score"
        );
    }

    #[test]
    fn decide_reports_every_number() {
        let v = decide(50.0, 30.0, 0.1);
        assert_eq!(
            v,
            Verdict {
                first_wins: true,
                score_1: 50.0,
                score_2: 30.0,
                delta: 0.2,
                random: 0.1
            }
        );
    }
}
