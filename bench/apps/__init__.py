"""The apps the benchmark serves with replkit, and what every contender's app shares."""
