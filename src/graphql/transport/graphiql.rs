//! The GraphiQL page: `graphiql.html` with its assets' base URL filled in
//! (`ARENA_GRAPHIQL_ASSETS`, an npm CDN or a mirror laid out like one).

/// The page's template; `__ARENA_ASSETS__` stands for the assets' base URL.
const TEMPLATE: &str = include_str!("graphiql.html");

/// The GraphiQL page loading its assets from `assets` (`<assets>/<package>@<version>/<file>`).
pub fn page(assets: &str) -> String {
    TEMPLATE.replace("__ARENA_ASSETS__", &attribute(assets.trim_end_matches('/')))
}

/// `value` escaped for a double-quoted HTML attribute.
fn attribute(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_assets_from_the_configured_base() {
        let html = page("https://mirror.example/npm/");
        assert!(html.contains("src=\"https://mirror.example/npm/graphiql@"));
        assert!(!html.contains("__ARENA_ASSETS__"));
        assert!(!html.contains("unpkg.com"));
        assert!(page("x\"><script>").contains("x&quot;&gt;&lt;script&gt;"));
    }
}
