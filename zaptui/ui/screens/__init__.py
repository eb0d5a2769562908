"""The console's screens: forms and views opened over a tab."""
