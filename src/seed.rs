//! `arena seed`: sample data so a new user has something to play with. Idempotent.

use crate::error::AppError;
use entity::meal::Difficulty;

use crate::meals::service::NewMeal;
use crate::state::AppState;

const MEALS: &[(&str, &str, f64, Difficulty)] = &[
    ("Margherita", "Italian", 9.5, Difficulty::Low),
    ("Carbonara", "Italian", 12.0, Difficulty::Med),
    ("Pad Thai", "Thai", 11.0, Difficulty::Med),
    ("Green Curry", "Thai", 13.5, Difficulty::High),
    ("Tacos al Pastor", "Mexican", 8.0, Difficulty::Med),
    ("Mole Poblano", "Mexican", 16.0, Difficulty::High),
    ("Ramen", "Japanese", 14.0, Difficulty::High),
    ("Sushi Platter", "Japanese", 22.0, Difficulty::High),
    ("Ratatouille", "French", 10.0, Difficulty::Low),
    ("Coq au Vin", "French", 19.0, Difficulty::High),
];

/// Inserts whatever sample rows are missing; returns a one-line report.
pub async fn run(state: &AppState) -> anyhow::Result<String> {
    let mut meals = 0;
    for (name, cuisine, price, difficulty) in MEALS {
        let input = NewMeal {
            name: (*name).into(),
            cuisine: (*cuisine).into(),
            price: *price,
            difficulty: *difficulty,
        };
        match crate::meals::service::create_meal(state, input).await {
            Ok(_) => meals += 1,
            Err(AppError::Conflict(_)) => {}
            Err(e) => return Err(anyhow::anyhow!("seeding meal {name}: {e:?}")),
        }
    }
    let (trainers, pokemons) = crate::pokemon::service::seed_samples(state).await?;
    Ok(format!(
        "seeded {meals} meals, {trainers} trainers, {pokemons} Pokémon"
    ))
}
