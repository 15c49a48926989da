"""Algorithms shipped with nexusd: `hello`, the example `nexusd dev` deploys."""
