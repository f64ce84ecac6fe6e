//! `lambox lint`: what AWS would refuse, or what would fail at run time, caught at home.
