//! Variable values coerced against the types their operation declares (the GraphQL spec's
//! CoerceVariableValues), for every request, before it runs.
//!
//! async-graphql checks variable values only while validating a document, and a document
//! that validated once is not validated again (see `documents`): this check is what a request
//! with new values still goes through. The input types are read from the schema's own SDL, so
//! they are always the ones the schema accepts.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    BaseType, OperationDefinition, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, ServerError, Value, Variables};

/// What a named input type accepts.
enum InputType {
    Int,
    Float,
    String,
    Boolean,
    Id,
    /// A custom scalar: its own parser decides, when the field runs.
    Custom,
    Enum(HashSet<String>),
    Object(Vec<InputField>),
}

struct InputField {
    name: Name,
    ty: Type,
    has_default: bool,
}

/// The input types of a schema.
pub struct InputTypes {
    types: HashMap<String, InputType>,
}

impl InputTypes {
    /// The input types defined by `sdl` (the schema's export), with the built-in scalars.
    pub fn from_sdl(sdl: &str) -> Self {
        let mut types = HashMap::from([
            ("Int".to_owned(), InputType::Int),
            ("Float".to_owned(), InputType::Float),
            ("String".to_owned(), InputType::String),
            ("Boolean".to_owned(), InputType::Boolean),
            ("ID".to_owned(), InputType::Id),
        ]);
        let doc = async_graphql::parser::parse_schema(sdl).expect("the schema's SDL parses");
        for def in doc.definitions {
            let TypeSystemDefinition::Type(def) = def else {
                continue;
            };
            let def = def.node;
            let ty = match def.kind {
                TypeKind::Scalar => InputType::Custom,
                TypeKind::Enum(e) => InputType::Enum(
                    e.values
                        .into_iter()
                        .map(|v| v.node.value.node.to_string())
                        .collect(),
                ),
                TypeKind::InputObject(o) => InputType::Object(
                    o.fields
                        .into_iter()
                        .map(|f| InputField {
                            name: f.node.name.node,
                            ty: f.node.ty.node,
                            has_default: f.node.default_value.is_some(),
                        })
                        .collect(),
                ),
                _ => continue,
            };
            types.entry(def.name.node.to_string()).or_insert(ty);
        }
        Self { types }
    }

    /// Checks the request's `variables` against the declarations of `op`: each value (or the
    /// declared default) must fit its type, and non-null ones must be given.
    pub fn coerce(
        &self,
        op: &OperationDefinition,
        variables: &Variables,
    ) -> Result<(), ServerError> {
        for def in &op.variable_definitions {
            let def = &def.node;
            let name = &def.name.node;
            let value = variables
                .get(name)
                .or_else(|| def.default_value.as_ref().map(|v| &v.node));
            let ty = &def.var_type.node;
            if value.is_none() && !ty.nullable {
                return Err(ServerError::new(
                    format!("Variable \"${name}\" of required type \"{ty}\" was not provided."),
                    Some(def.name.pos),
                ));
            }
            if let Err(why) = self.check(ty, value) {
                return Err(ServerError::new(
                    format!("Variable \"${name}\" got an invalid value: {why}"),
                    Some(def.name.pos),
                ));
            }
        }
        Ok(())
    }

    fn check(&self, ty: &Type, value: Option<&Value>) -> Result<(), String> {
        let value = match value {
            None | Some(Value::Null) if ty.nullable => return Ok(()),
            None | Some(Value::Null) => {
                return Err(format!(
                    "expected a value of the non-null type \"{ty}\", found null"
                ))
            }
            Some(v) => v,
        };
        match &ty.base {
            BaseType::List(inner) => match value {
                Value::List(items) => items.iter().enumerate().try_for_each(|(i, v)| {
                    self.check(inner, Some(v))
                        .map_err(|e| format!("[{i}]: {e}"))
                }),
                // A single value stands for a list of one.
                single => self.check(inner, Some(single)),
            },
            BaseType::Named(name) => self.check_named(name, value),
        }
    }

    fn check_named(&self, name: &Name, value: &Value) -> Result<(), String> {
        let Some(ty) = self.types.get(name.as_str()) else {
            return Err(format!("\"{name}\" is not an input type"));
        };
        let fits = match (ty, value) {
            (InputType::Int, Value::Number(n)) => {
                n.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
            }
            (InputType::Float, Value::Number(_)) => true,
            (InputType::String, Value::String(_)) => true,
            (InputType::Boolean, Value::Boolean(_)) => true,
            (InputType::Id, Value::String(_)) => true,
            (InputType::Id, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (InputType::Custom, _) => true,
            (InputType::Enum(values), Value::String(s)) => values.contains(s.as_str()),
            (InputType::Enum(values), Value::Enum(e)) => values.contains(e.as_str()),
            (InputType::Object(fields), Value::Object(given)) => {
                if let Some(unknown) = given.keys().find(|k| !fields.iter().any(|f| &f.name == *k))
                {
                    return Err(format!("\"{name}\" has no field \"{unknown}\""));
                }
                for f in fields {
                    match given.get(&f.name) {
                        None if !f.ty.nullable && !f.has_default => {
                            return Err(format!("{name}.{}: a value is required", f.name))
                        }
                        None => {}
                        Some(v) => self
                            .check(&f.ty, Some(v))
                            .map_err(|e| format!("{name}.{}: {e}", f.name))?,
                    }
                }
                true
            }
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(format!(
                "expected a value of type \"{name}\", found {value}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SDL: &str = r#"
        enum Difficulty { LOW MED HIGH }
        input NewMeal { name: String! price: Float! difficulty: Difficulty = MED tags: [String!] }
        scalar Upload
        type Query { meal(id: ID!): Int }
    "#;

    fn coerce(query: &str, vars: serde_json::Value) -> Result<(), String> {
        let types = InputTypes::from_sdl(SDL);
        let doc = async_graphql::parser::parse_query(query).unwrap();
        let (_, op) = doc.operations.iter().next().unwrap();
        types
            .coerce(&op.node, &Variables::from_json(vars))
            .map_err(|e| e.message)
    }

    #[test]
    fn values_that_fit_their_declared_types_pass() {
        assert!(coerce("query($id: ID!) { meal(id: $id) }", json!({ "id": "1" })).is_ok());
        assert!(coerce("query($id: ID!) { meal(id: $id) }", json!({ "id": 7 })).is_ok());
        assert!(coerce("query($d: Boolean) { a }", json!({})).is_ok());
        assert!(coerce("query($d: Boolean = true) { a }", json!({ "d": null })).is_ok());
        assert!(coerce(
            "query($m: NewMeal!) { a }",
            json!({ "m": { "name": "x", "price": 2, "tags": "one" } })
        )
        .is_ok());
        assert!(coerce(
            "query($f: Upload!) { a }",
            json!({ "f": "#__graphql_file__:0" })
        )
        .is_ok());
        assert!(coerce("query($l: [Int!]!) { a }", json!({ "l": [1, 2] })).is_ok());
    }

    #[test]
    fn values_that_do_not_fit_are_refused_with_the_variable_named() {
        let e = coerce("query($id: ID!) { meal(id: $id) }", json!({ "id": null })).unwrap_err();
        assert!(e.contains("$id"), "{e}");
        assert!(coerce("query($id: ID!) { meal(id: $id) }", json!({})).is_err());
        assert!(coerce("query($id: ID!) { a }", json!({ "id": { "x": 1 } })).is_err());
        assert!(coerce("query($n: Int) { a }", json!({ "n": 1.5 })).is_err());
        assert!(coerce("query($n: Int) { a }", json!({ "n": 3_000_000_000i64 })).is_err());
        assert!(coerce("query($m: NewMeal!) { a }", json!({ "m": { "name": "x" } })).is_err());
        let e = coerce(
            "query($m: NewMeal!) { a }",
            json!({ "m": { "name": "x", "price": 1, "difficulty": "EASY" } }),
        )
        .unwrap_err();
        assert!(e.contains("difficulty"), "{e}");
        assert!(coerce(
            "query($m: NewMeal!) { a }",
            json!({ "m": { "name": "x", "price": 1, "colour": 1 } })
        )
        .is_err());
        assert!(coerce("query($l: [Int!]!) { a }", json!({ "l": [1, null] })).is_err());
    }

    /// A schema of the same input types as [`SDL`], for async-graphql to judge.
    mod pinned {
        use async_graphql::{EmptyMutation, EmptySubscription, Enum, InputObject, Object, ID};

        #[derive(Enum, Copy, Clone, Eq, PartialEq)]
        pub enum Difficulty {
            Low,
            Med,
            High,
        }

        #[derive(InputObject)]
        pub struct NewMeal {
            pub name: String,
            pub price: f64,
            pub difficulty: Option<Difficulty>,
            pub tags: Option<Vec<String>>,
        }

        pub struct Query;

        #[Object]
        impl Query {
            async fn by_id(&self, id: ID) -> i32 {
                id.len() as i32
            }
            async fn meal(&self, m: NewMeal) -> i32 {
                m.name.len() as i32
            }
            async fn ints(&self, l: Vec<i32>) -> i32 {
                l.len() as i32
            }
            async fn opt_int(&self, n: Option<i32>) -> i32 {
                n.unwrap_or(0)
            }
            async fn flag(&self, d: Option<bool>) -> bool {
                d.unwrap_or(false)
            }
            async fn level(&self, d: Difficulty) -> bool {
                d == Difficulty::High
            }
        }

        pub type S = async_graphql::Schema<Query, EmptyMutation, EmptySubscription>;
        pub fn schema() -> S {
            S::new(Query, EmptyMutation, EmptySubscription)
        }
    }

    /// Arena's coercion accepts exactly the variable values async-graphql's own validation
    /// accepts, on a corpus of documents and values (the pin to re-check on an upgrade).
    #[tokio::test]
    async fn coercion_agrees_with_async_graphql_on_a_corpus() {
        let schema = pinned::schema();
        let types = InputTypes::from_sdl(&schema.sdl());
        let corpus: Vec<(&str, serde_json::Value)> = vec![
            ("query($id: ID!) { byId(id: $id) }", json!({ "id": "1" })),
            ("query($id: ID!) { byId(id: $id) }", json!({ "id": 7 })),
            ("query($id: ID!) { byId(id: $id) }", json!({ "id": null })),
            ("query($id: ID!) { byId(id: $id) }", json!({})),
            ("query($id: ID!) { byId(id: $id) }", json!({ "id": 1.5 })),
            ("query($id: ID!) { byId(id: $id) }", json!({ "id": true })),
            (
                "query($id: ID!) { byId(id: $id) }",
                json!({ "id": { "x": 1 } }),
            ),
            ("query($id: ID!) { byId(id: $id) }", json!({ "id": ["1"] })),
            ("query($n: Int) { optInt(n: $n) }", json!({})),
            ("query($n: Int) { optInt(n: $n) }", json!({ "n": null })),
            ("query($n: Int) { optInt(n: $n) }", json!({ "n": 3 })),
            (
                "query($n: Int) { optInt(n: $n) }",
                json!({ "n": -2147483648i64 }),
            ),
            ("query($n: Int) { optInt(n: $n) }", json!({ "n": 1.5 })),
            (
                "query($n: Int) { optInt(n: $n) }",
                json!({ "n": 3_000_000_000i64 }),
            ),
            ("query($n: Int) { optInt(n: $n) }", json!({ "n": "3" })),
            ("query($n: Int = 4) { optInt(n: $n) }", json!({ "n": null })),
            ("query($d: Boolean) { flag(d: $d) }", json!({ "d": true })),
            ("query($d: Boolean) { flag(d: $d) }", json!({ "d": "true" })),
            ("query($d: Boolean = true) { flag(d: $d) }", json!({})),
            ("query($l: [Int!]!) { ints(l: $l) }", json!({ "l": [1, 2] })),
            ("query($l: [Int!]!) { ints(l: $l) }", json!({ "l": 1 })),
            (
                "query($l: [Int!]!) { ints(l: $l) }",
                json!({ "l": [1, null] }),
            ),
            ("query($l: [Int!]!) { ints(l: $l) }", json!({ "l": [] })),
            ("query($l: [Int!]!) { ints(l: $l) }", json!({ "l": ["a"] })),
            (
                "query($e: Difficulty!) { level(d: $e) }",
                json!({ "e": "HIGH" }),
            ),
            (
                "query($e: Difficulty!) { level(d: $e) }",
                json!({ "e": "EASY" }),
            ),
            (
                "query($e: Difficulty!) { level(d: $e) }",
                json!({ "e": "high" }),
            ),
            ("query($e: Difficulty!) { level(d: $e) }", json!({ "e": 1 })),
            (
                "query($m: NewMeal!) { meal(m: $m) }",
                json!({ "m": { "name": "x", "price": 2 } }),
            ),
            (
                "query($m: NewMeal!) { meal(m: $m) }",
                json!({ "m": { "name": "x", "price": 2, "tags": "one" } }),
            ),
            (
                "query($m: NewMeal!) { meal(m: $m) }",
                json!({ "m": { "name": "x", "price": 2, "tags": ["a", "b"] } }),
            ),
            (
                "query($m: NewMeal!) { meal(m: $m) }",
                json!({ "m": { "name": "x", "price": 2, "difficulty": "LOW" } }),
            ),
            (
                "query($m: NewMeal!) { meal(m: $m) }",
                json!({ "m": { "name": "x", "price": 2, "difficulty": "EASY" } }),
            ),
            (
                "query($m: NewMeal!) { meal(m: $m) }",
                json!({ "m": { "name": "x" } }),
            ),
            (
                "query($m: NewMeal!) { meal(m: $m) }",
                json!({ "m": { "name": "x", "price": 1, "colour": 1 } }),
            ),
            (
                "query($m: NewMeal!) { meal(m: $m) }",
                json!({ "m": { "name": null, "price": 1 } }),
            ),
            ("query($m: NewMeal!) { meal(m: $m) }", json!({ "m": "x" })),
            ("query($m: NewMeal!) { meal(m: $m) }", json!({ "m": [] })),
        ];
        for (query, vars) in corpus {
            let doc = async_graphql::parser::parse_query(query).unwrap();
            let (_, op) = doc.operations.iter().next().unwrap();
            let ours = types.coerce(&op.node, &Variables::from_json(vars.clone()));
            let theirs = schema
                .execute(
                    async_graphql::Request::new(query)
                        .variables(Variables::from_json(vars.clone())),
                )
                .await;
            assert_eq!(
                ours.is_ok(),
                theirs.errors.is_empty(),
                "{query} with {vars}: Arena says {:?}, async-graphql says {:?}",
                ours.err().map(|e| e.message),
                theirs.errors
            );
        }
    }
}
