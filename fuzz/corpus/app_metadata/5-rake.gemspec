Gem::Specification.new do |s|
  s.name = "rake"
  s.version = "13.0.6"
end
