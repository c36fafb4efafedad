fn main() {
    print!("{}", compshare_operator::resource::crd_yaml());
}
