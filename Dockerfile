# Builds the `arena` binary and runs it on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin arena

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/arena /usr/local/bin/arena
ENV ARENA_ADDR=0.0.0.0:8000
EXPOSE 8000
ENTRYPOINT ["arena"]
CMD ["serve"]
